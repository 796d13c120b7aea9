//! Checks for `[authorization]` (the Cedar policies and the clock their time facts use) and
//! `[audit]`.

use super::Validator;
use crate::config::{AuditSink, raw, resolve_path};

impl Validator {
    pub(super) fn policies(
        &mut self,
        a: &raw::Authorization,
    ) -> std::sync::Arc<crate::authorize::cedar::Policies> {
        let dir = a
            .policies_dir
            .as_deref()
            .map(|d| resolve_path(&self.base, d));
        match crate::authorize::cedar::Policies::load(dir.as_deref(), &a.admin_groups) {
            Ok(p) => std::sync::Arc::new(p),
            Err(errors) => {
                self.errors.extend(errors);
                // Never used: the config is refused.
                std::sync::Arc::new(
                    crate::authorize::cedar::Policies::load(None, &[])
                        .expect("the embedded policies are valid"),
                )
            }
        }
    }

    pub(super) fn utc_offset(&mut self, s: Option<&str>) -> i64 {
        let Some(s) = s else { return 0 };
        let parsed = (|| {
            let (sign, rest) = match s.as_bytes().first()? {
                b'+' => (1, &s[1..]),
                b'-' => (-1, &s[1..]),
                _ => return None,
            };
            let (h, m) = rest.split_once(':')?;
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 14 && m < 60 && h.to_string().len() <= 2).then_some(sign * (h * 3600 + m * 60))
        })();
        parsed.unwrap_or_else(|| {
            self.err(
                "authorization.utc_offset",
                format!("`{s}` is not an offset like +01:00 or -05:00"),
            );
            0
        })
    }

    /// `[audit]`: where the audit log goes and how much of it may wait for the writer.
    pub(super) fn audit(&mut self, raw: &raw::Audit) -> (AuditSink, usize) {
        let audit = match raw.path.as_deref() {
            None | Some("-") => AuditSink::Stdout,
            Some("off") => AuditSink::Off,
            Some(p) => AuditSink::File(resolve_path(&self.base, p)),
        };
        let audit_backlog = raw.backlog.unwrap_or(65_536);
        if audit_backlog == 0 || audit_backlog > 10_000_000 {
            self.err("audit.backlog", "must be between 1 and 10000000");
        }
        (audit, audit_backlog)
    }
}
