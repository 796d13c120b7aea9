//! Checks for `[web]`: the user page at `/`.

use std::collections::BTreeMap;

use super::Validator;
use crate::config::{AuthenticatorConfig, Route, raw};
use crate::site::web::WebConfig;
use crate::site::web::grafana::GrafanaTemplate;

impl Validator {
    pub(super) fn web(
        &mut self,
        raw: raw::Web,
        authenticators: &BTreeMap<String, AuthenticatorConfig>,
        routes: &[Route],
        admin_groups: &[String],
    ) -> WebConfig {
        let has_login = authenticators
            .values()
            .any(|a| matches!(a, AuthenticatorConfig::OidcLogin(_)));
        if !has_login && self.failed_authenticators.is_empty() {
            self.err(
                "web",
                "the user page is for browsers logged in with OpenID Connect: configure an \
                 oidc_login authenticator",
            );
        }
        let grafana_url =
            raw.grafana_url
                .as_deref()
                .and_then(|t| match GrafanaTemplate::parse(t) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.err("web.grafana_url", e);
                        None
                    }
                });
        let page_size = match raw.page_size {
            None => 25,
            Some(n @ 1..=500) => n as usize,
            Some(_) => {
                self.err("web.page_size", "must be 1 to 500");
                25
            }
        };
        let docs_url = raw.docs_url.unwrap_or_else(|| "/api/v1/docs/".into());
        if !(docs_url.starts_with('/') && !docs_url.starts_with("//")
            || docs_url.starts_with("https://")
            || docs_url.starts_with("http://"))
        {
            self.err(
                "web.docs_url",
                "must be a path on this gateway (/…) or an http(s):// URL",
            );
        }
        WebConfig {
            grafana_url,
            page_size,
            docs_url,
            // A key is good only where an api_key authenticator is listed: those routes are
            // what a key may be limited to, and without any the page makes no keys.
            scopes: routes
                .iter()
                .filter(|r| {
                    r.authenticators.iter().any(|a| {
                        matches!(
                            authenticators.get(a),
                            Some(AuthenticatorConfig::ApiKey { .. })
                        )
                    })
                })
                .map(|r| r.name.clone())
                .collect(),
            admin_groups: admin_groups.to_vec(),
        }
    }
}
