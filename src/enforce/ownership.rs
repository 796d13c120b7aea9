//! The `ownership` PromQL mode's question to the accounting store: are these job ids the
//! user's, or of a project the user is a member of? One query for the ids not cached;
//! answers are cached briefly (owned 30 s, foreign 5 s, so a job just ingested is soon
//! readable). The store not answering is a 503: no job is trusted blindly.

use std::collections::BTreeSet;
use std::time::Duration;

use moka::future::Cache;

use crate::db::Db;
use crate::error::Rejection;

/// Most ids named in one refusal (the rest are counted).
const NAMED: usize = 10;

pub struct Ownership {
    db: Db,
    owned: Cache<(String, String), ()>,
    foreign: Cache<(String, String), ()>,
}

impl Ownership {
    pub fn new(db: Db) -> Self {
        Ownership {
            db,
            owned: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            foreign: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
        }
    }

    /// `Ok` when every id is the user's (or of their projects); otherwise 403 naming the ids
    /// that are not, or 503 when the store cannot answer.
    pub async fn check(&self, user: &str, ids: &BTreeSet<String>) -> Result<(), Rejection> {
        let mut foreign = Vec::new();
        let mut ask = Vec::new();
        for id in ids {
            let key = (user.to_string(), id.clone());
            if self.owned.contains_key(&key) {
                continue;
            }
            if self.foreign.contains_key(&key) {
                foreign.push(id.clone());
            } else {
                ask.push(id.clone());
            }
        }
        if !ask.is_empty() {
            let answer = crate::accounting::store::foreign_units(&self.db, user, &ask)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e.0, "job ownership lookup failed");
                    Rejection::Unavailable(
                        "the accounting store cannot answer, so job ownership cannot be \
                         checked; try again later"
                            .into(),
                    )
                })?;
            for id in ask {
                let key = (user.to_string(), id.clone());
                if answer.contains(&id) {
                    self.foreign.insert(key, ()).await;
                    foreign.push(id);
                } else {
                    self.owned.insert(key, ()).await;
                }
            }
        }
        if foreign.is_empty() {
            return Ok(());
        }
        foreign.sort();
        let more = foreign.len().saturating_sub(NAMED);
        foreign.truncate(NAMED);
        let mut msg = format!(
            "these jobs are neither yours nor your projects': {}",
            foreign.join(", ")
        );
        if more > 0 {
            msg.push_str(&format!(" (and {more} more)"));
        }
        Err(Rejection::Forbidden(msg))
    }
}
