//! The user page at `/` (`[web]` in the config): who you are, your jobs and usage from the
//! accounting store, and your API keys, for a browser logged in with `oidc_login`.
//!
//! - `mod.rs`: which paths are the page's, who may see them, the form actions.
//! - `data.rs`: the store queries (called directly, not through the accounting HTTP API).
//! - `page.rs`: the HTML (maud; everything rendered is escaped by the template engine);
//!   `keys.rs`: its API keys section.
//! - `chart.rs`: the usage bar chart as inline SVG; `grafana.rs`: job → dashboard links;
//!   `error_page.rs`: refusals as HTML for browsers (the forms' CSRF tokens are
//!   `authenticate/csrf.rs`').
//! - `assets/`: the style sheet and the few lines of script (local times, copy button),
//!   embedded in the binary and served at `/-/web/…`.
//!
//! Every state-changing request is a POST with the session's CSRF token in a form field, and
//! is refused when the browser marks it as cross-site. A new API key is shown once, in the
//! answer to the POST that made it, and never again.

pub mod chart;
mod data;
pub mod error_page;
pub mod grafana;
mod keys;
mod page;

use std::sync::Arc;

use bytes::Bytes;

use crate::authenticate::csrf;
use crate::authenticate::oidc::{OidcLogin, PageReply};
use crate::authenticate::{Authenticator, Caller, Identity, Outcome, RequestInfo};
use crate::db::Db;
use crate::error::Rejection;
use crate::error::Reply;

pub use error_page::{html_rejection, wants_html};

/// `[web]`, checked.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub grafana_url: Option<grafana::GrafanaTemplate>,
    pub page_size: usize,
    pub docs_url: String,
    /// The routes that take API keys: what a key may be limited to. Empty: no route takes
    /// keys, and the page makes none.
    pub scopes: Vec<String>,
    /// `[authorization] admin_groups`: their members get the `/-/status` link.
    pub admin_groups: Vec<String>,
}

/// The largest form body read.
const MAX_FORM: usize = 16 * 1024;

/// A path of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Home,
    Style,
    Script,
    CreateKey,
    RevokeKey,
}

impl Page {
    pub fn parse(path: &str) -> Option<Page> {
        match path {
            "/" => Some(Page::Home),
            "/-/web/style.css" => Some(Page::Style),
            "/-/web/page.js" => Some(Page::Script),
            "/-/web/keys" => Some(Page::CreateKey),
            "/-/web/keys/revoke" => Some(Page::RevokeKey),
            _ => None,
        }
    }

    /// For logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Page::Home => "web",
            Page::Style | Page::Script => "-/web/assets",
            Page::CreateKey => "-/web/keys",
            Page::RevokeKey => "-/web/keys/revoke",
        }
    }

    /// Style and script are the same for everyone and say nothing about anyone.
    pub fn is_asset(self) -> bool {
        matches!(self, Page::Style | Page::Script)
    }

    fn method(self) -> http::Method {
        match self {
            Page::CreateKey | Page::RevokeKey => http::Method::POST,
            _ => http::Method::GET,
        }
    }
}

/// Whether the request's body is a form the gateway reads itself (before authentication,
/// which needs the headers only): the page's actions and logout.
pub fn reads_form(path: &str, method: &http::Method) -> bool {
    method == http::Method::POST && (path == "/auth/logout" || path.starts_with("/-/web/"))
}

/// Reads a form body (at most 16 KiB).
pub async fn read_form(
    session: &mut pingora::proxy::Session,
) -> Result<Vec<(String, String)>, Rejection> {
    let mut body = Vec::new();
    loop {
        let chunk = session
            .read_request_body()
            .await
            .map_err(|_| Rejection::BadRequest("the form could not be read".into()))?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_FORM {
            return Err(Rejection::TooLarge("a form is at most 16 KiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(form_urlencoded::parse(&body).into_owned().collect())
}

/// The first value of a form field.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The page, built from the config.
pub struct Web {
    cfg: WebConfig,
    login: Arc<OidcLogin>,
    db: Db,
}

fn html(status: u16, body: maud::Markup) -> Reply {
    Reply {
        status,
        content_type: "text/html; charset=utf-8",
        body: Bytes::from(body.into_string()),
    }
}

fn served(reply: Reply, caller: Caller) -> PageReply {
    PageReply {
        reply,
        location: None,
        caller,
    }
}

fn store_down(e: crate::db::StoreError) -> Rejection {
    tracing::warn!(error = %e, "user page: the database cannot answer");
    Rejection::Unavailable("the database cannot answer right now; try again shortly".into())
}

impl Web {
    /// The page, if `[web]` is configured (validation made sure `oidc_login` is).
    pub fn build(
        web: Option<&WebConfig>,
        database: &crate::db::DbConfig,
        login: Option<Arc<OidcLogin>>,
    ) -> Result<Option<Arc<Web>>, String> {
        let Some(cfg) = web else {
            return Ok(None);
        };
        let login = login.ok_or("[web] needs an oidc_login authenticator")?;
        let db = Db::lazy(database).map_err(|e| format!("[web]: database: {e}"))?;
        Ok(Some(Arc::new(Web {
            cfg: cfg.clone(),
            login,
            db,
        })))
    }

    /// Serves a page of the site; `form` is the POST body (see [`reads_form`]).
    pub async fn serve(
        &self,
        page: Page,
        req: &RequestInfo<'_>,
        form: &[(String, String)],
    ) -> Result<PageReply, Rejection> {
        let wanted = page.method();
        if req.method != wanted
            && !(wanted == http::Method::GET && req.method == http::Method::HEAD)
        {
            return Err(Rejection::MethodNotAllowed(format!(
                "{} takes {wanted}",
                page.name()
            )));
        }
        let asset = |content_type, body: &'static str| {
            served(
                Reply {
                    status: 200,
                    content_type,
                    body: Bytes::from_static(body.as_bytes()),
                },
                Caller::Public,
            )
        };
        match page {
            Page::Style => return Ok(asset("text/css; charset=utf-8", page::STYLE)),
            Page::Script => return Ok(asset("text/javascript; charset=utf-8", page::SCRIPT)),
            _ => {}
        }
        let id = self.user(req).await?;
        if wanted == http::Method::POST
            && (csrf::cross_site(req.headers)
                || !self.login.csrf_valid(req.headers, field(form, csrf::FIELD)))
        {
            tracing::warn!(
                user = id.user(),
                page = page.name(),
                "user page: form without a valid CSRF token refused"
            );
            return Err(Rejection::Forbidden(
                "this form did not come from your page (its CSRF token is missing or wrong); \
                 reload the page and try again"
                    .into(),
            ));
        }
        match page {
            Page::CreateKey => self.create_key(req, &id, form).await,
            Page::RevokeKey => {
                let key = field(form, "id").unwrap_or("");
                let done = self
                    .db
                    .revoke_key(key, Some(id.user()))
                    .await
                    .map_err(store_down)?;
                if done {
                    tracing::info!(user = id.user(), key, "user page: API key revoked");
                }
                let outcome = if done { "revoked" } else { "not-revoked" };
                Ok(PageReply {
                    reply: html(303, maud::html! { a href="/#keys" { "Back to your keys" } }),
                    location: Some(format!("/?done={outcome}#keys")),
                    caller: Caller::User(id),
                })
            }
            _ => {
                let q: Vec<(String, String)> =
                    form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
                        .into_owned()
                        .collect();
                let notice = match field(&q, "done") {
                    Some("revoked") => Some(page::Notice::Ok("The key was revoked.".into())),
                    Some("not-revoked") => Some(page::Notice::Error(
                        "No such live key of yours: nothing was revoked.".into(),
                    )),
                    _ => None,
                };
                self.home(req, id, &q, notice, None, 200).await
            }
        }
    }

    /// The caller, from the browser session only: the page's forms are bound to it.
    async fn user(&self, req: &RequestInfo<'_>) -> Result<Identity, Rejection> {
        match self.login.authenticate(req).await {
            Outcome::Authenticated(id) => Ok(id),
            Outcome::Rejected(r) => Err(r),
            // Not a browser session (the login never answers with the password outcomes).
            _ => Err(Rejection::Unauthorized {
                reason: format!(
                    "the page at / is for browsers logged in at /auth/login; API clients: see \
                     /-/whoami and the API documentation at {}",
                    self.cfg.docs_url
                ),
                challenge: "Bearer realm=\"hpcgate\"".into(),
            }),
        }
    }

    async fn create_key(
        &self,
        req: &RequestInfo<'_>,
        id: &Identity,
        form: &[(String, String)],
    ) -> Result<PageReply, Rejection> {
        let name = field(form, "name").unwrap_or("").trim();
        let scopes: Vec<String> = form
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        let days = field(form, "expires_days").unwrap_or("");
        let problem = if self.cfg.scopes.is_empty() {
            Some("No route of this gateway takes API keys.".to_string())
        } else if name.is_empty() || name.chars().count() > 100 {
            Some("A key needs a name of 1 to 100 characters.".to_string())
        } else if name.chars().any(char::is_control) {
            Some("A key's name may not hold control characters.".to_string())
        } else if let Some(s) = scopes.iter().find(|s| !self.cfg.scopes.contains(s)) {
            Some(format!("`{s}` is not a route this gateway has."))
        } else if !page::EXPIRY_DAYS.iter().any(|d| d.to_string() == days) {
            Some("Pick how long the key lasts from the list.".to_string())
        } else {
            None
        };
        let no_query: Vec<(String, String)> = Vec::new();
        if let Some(p) = problem {
            let notice = Some(page::Notice::Error(p));
            return self
                .home(req, id.clone(), &no_query, notice, None, 400)
                .await;
        }
        let days: i64 = days.parse().unwrap_or(30);
        let made = self
            .db
            .create_key(&crate::db::api_keys::KeyRequest {
                owner: id.user(),
                name,
                groups: id.groups(),
                scopes: &scopes,
                expires_at: Some(crate::db::now() + days * 86_400),
            })
            .await;
        match made {
            Ok(k) => {
                tracing::info!(user = id.user(), key = %k.record.id, "user page: API key created");
                let notice = Some(page::Notice::Ok(format!(
                    "Key “{}” created. Copy it now: it is not shown again.",
                    k.record.name
                )));
                self.home(req, id.clone(), &no_query, notice, Some(k.token), 200)
                    .await
            }
            // A live key of the same name: the store says so in words.
            Err(e) if e.0.contains("already has a live key") => {
                let notice = Some(page::Notice::Error(e.0));
                self.home(req, id.clone(), &no_query, notice, None, 409)
                    .await
            }
            Err(e) => Err(store_down(e)),
        }
    }

    /// The whole page.
    async fn home(
        &self,
        req: &RequestInfo<'_>,
        id: Identity,
        query: &[(String, String)],
        notice: Option<page::Notice>,
        new_key: Option<String>,
        status: u16,
    ) -> Result<PageReply, Rejection> {
        let session = self.login.session_view(req.headers);
        let filters = data::Filters::from_query(query)?;
        let now = crate::db::now();
        let jobs = data::jobs(&self.db, id.user(), &filters, self.cfg.page_size, now)
            .await
            .map_err(store_down)?;
        let usage = data::usage(&self.db, id.user(), now)
            .await
            .map_err(store_down)?;
        let keys = self
            .db
            .list_keys(Some(id.user()))
            .await
            .map_err(store_down)?;
        let admin = id
            .groups()
            .iter()
            .any(|g| self.cfg.admin_groups.contains(g))
            || crate::accounting::store::is_admin(&self.db, id.user())
                .await
                .unwrap_or(false);
        let view = page::View {
            id: &id,
            session: session.as_ref(),
            cfg: &self.cfg,
            filters: &filters,
            jobs: &jobs,
            usage: &usage,
            keys: &keys,
            admin,
            notice,
            new_key,
            now,
        };
        Ok(served(html(status, page::render(&view)), Caller::User(id)))
    }
}
