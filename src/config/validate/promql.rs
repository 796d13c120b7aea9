//! Checks for `[routes.promql]`: how a `prometheus` route confines queries to the caller.

use super::Validator;
use crate::config::{RouteKind, raw};
use crate::enforce::prometheus::config::PromqlMode;

impl Validator {
    pub(super) fn promql(
        &mut self,
        key: &str,
        kind: RouteKind,
        raw: Option<raw::Promql>,
    ) -> PromqlMode {
        let Some(p) = raw else {
            return match kind {
                RouteKind::Prometheus => PromqlMode::Label {
                    label: "user".into(),
                    from_groups: false,
                },
                _ => PromqlMode::Off,
            };
        };
        if kind != RouteKind::Prometheus {
            self.err(
                format!("{key}.promql"),
                "only for routes of kind prometheus",
            );
            return PromqlMode::Off;
        }
        let label = p.label.unwrap_or_else(|| {
            if p.mode == "ownership" {
                "uuid"
            } else {
                "user"
            }
            .into()
        });
        let valid_label = label
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !label.starts_with("__");
        if !valid_label {
            self.err(
                format!("{key}.promql.label"),
                format!("`{label}` is not a Prometheus label name"),
            );
        }
        if !p.allow_metrics.is_empty() && p.mode != "ownership" {
            self.err(
                format!("{key}.promql.allow_metrics"),
                "only used with mode = \"ownership\"",
            );
        }
        for (i, m) in p.allow_metrics.iter().enumerate() {
            let valid = m
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if !valid {
                self.err(
                    format!("{key}.promql.allow_metrics[{i}]"),
                    format!("`{m}` is not a metric name (exact names only, no patterns)"),
                );
            }
        }
        let from_groups = match p.value.as_deref() {
            None | Some("user") => false,
            Some("groups") if p.mode == "label" => true,
            Some("groups") => {
                self.err(
                    format!("{key}.promql.value"),
                    "only used with mode = \"label\"",
                );
                false
            }
            Some(other) => {
                self.err(
                    format!("{key}.promql.value"),
                    format!("unknown value `{other}`; expected user or groups"),
                );
                false
            }
        };
        match p.mode.as_str() {
            "label" => PromqlMode::Label { label, from_groups },
            "ownership" => PromqlMode::Ownership {
                label,
                allow_metrics: p.allow_metrics,
            },
            "off" => PromqlMode::Off,
            other => {
                self.err(
                    format!("{key}.promql.mode"),
                    format!("unknown mode `{other}`; expected label, ownership or off"),
                );
                PromqlMode::Off
            }
        }
    }
}
