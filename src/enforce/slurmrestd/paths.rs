//! Which Slurm REST paths are the `admin` action in policies.
//!
//! Users read what Slurm shows them and submit, update and cancel jobs
//! (`/slurm/v*/job…`, `/slurm/v*/jobs`, `/slurmdb/v*/job…`); Slurm itself decides whose jobs
//! those are. Everything else that changes the cluster — `reconfigure` (a GET in v0.0.38),
//! node, partition and reservation updates, accounts, associations, users, QOS, wckeys,
//! clusters — is `admin`, and so is `diag` when the route says so. Unknown paths are `admin`
//! for any method but GET/HEAD/OPTIONS: a new write endpoint of a newer Slurm is for admins
//! until a policy says otherwise.

use std::borrow::Cow;

fn is_version(seg: &str) -> bool {
    let mut c = seg.chars();
    matches!(c.next(), Some('v' | 'V'))
        && seg.len() > 1
        && c.all(|c| c.is_ascii_digit() || c == '.')
}

/// Whether this request on a slurmrestd route is an admin action. `path` is the full
/// canonical path (see `sanitize`; any route prefix before `/slurm/vX/…` is skipped).
pub fn is_admin(path: &str, method: &http::Method, admin_diag: bool) -> bool {
    let read = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    // Compare decoded and lower-cased, so `reconfigur%65` or `Reconfigure` cannot slip by.
    // (The canonical path has no such escapes left; case folding only adds admin requests,
    // which slurmrestd would answer with 404 anyway, its paths being case-sensitive.)
    let segs: Vec<Cow<'_, str>> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy())
        .map(|s| Cow::Owned(s.to_ascii_lowercase()))
        .collect();
    let Some(i) = segs
        .windows(2)
        .position(|w| matches!(&*w[0], "slurm" | "slurmdb") && is_version(&w[1]))
    else {
        return !read;
    };
    let api = &*segs[i];
    let op = segs.get(i + 2).map(|s| &**s).unwrap_or("");
    match (api, op) {
        (_, "diag") => admin_diag,
        ("slurm", "reconfigure") => true,
        (_, "job" | "jobs") => false,
        ("slurm", "ping") => false,
        _ => !read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn users_read_and_manage_jobs_admins_change_the_cluster() {
        let get = Method::GET;
        let post = Method::POST;
        let del = Method::DELETE;
        for (path, method, admin) in [
            ("/slurm/v0.0.38/jobs", &get, false),
            ("/slurm/v0.0.38/job/submit", &post, false),
            ("/slurm/v0.0.38/job/12", &del, false),
            ("/slurm/v0.0.38/job/12", &post, false),
            ("/slurmdb/v0.0.38/jobs", &get, false),
            ("/slurmdb/v0.0.38/job/12", &get, false),
            ("/slurm/v0.0.38/ping", &get, false),
            ("/slurm/v0.0.38/nodes", &get, false),
            ("/slurm/v0.0.38/diag", &get, false),
            ("/slurm/v0.0.38/reconfigure", &get, true),
            ("/slurm/v0.0.41/reconfigure/", &get, true),
            ("/slurm/v0.0.38/Reconfigure", &get, true),
            ("/slurm/v0.0.38/reconfigur%65", &get, true),
            ("/slurm/v0.0.38/node/n1", &post, true),
            ("/slurm/v0.0.38/partition/debug", &post, true),
            ("/slurmdb/v0.0.38/accounts", &post, true),
            ("/slurmdb/v0.0.38/associations", &del, true),
            ("/slurmdb/v0.0.38/user/bob", &del, true),
            ("/slurmdb/v0.0.38/accounts", &get, false),
            // Per-cluster routes and a stripped route prefix.
            ("/cluster1/slurm/v0.0.38/reconfigure", &get, true),
            ("/slurm/slurm/v0.0.38/job/submit", &post, false),
            // Not a Slurm API path: reads pass, writes are for admins.
            ("/openapi/v3", &get, false),
            ("/openapi/v3", &post, true),
        ] {
            assert_eq!(is_admin(path, method, false), admin, "{method} {path}");
        }
        assert!(is_admin("/slurm/v0.0.38/diag", &get, true));
        assert!(is_admin("/slurmdb/v0.0.38/diag", &get, true));
    }
}
