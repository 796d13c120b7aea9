//! The checked `promql` setting of a `prometheus` route.

/// How a route confines PromQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromqlMode {
    /// Everyone reads everything (explicitly configured).
    Off,
    /// Every selector gets `<label>="<user>"`, or with `from_groups`
    /// `<label>=~"<group>|<group>"` over the caller's groups.
    Label { label: String, from_groups: bool },
    /// Every selector pins job ids (`<label>`, e.g. `uuid`) that are the user's or their
    /// projects' in the accounting store; `allow_metrics` belong to no job.
    Ownership {
        label: String,
        allow_metrics: Vec<String>,
    },
}
