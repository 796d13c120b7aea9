//! Least privilege: once the listeners are open, the gateway gives up whatever it does not
//! need to serve (see the operations section of README.md).
//!
//! Started as root, it hands the state directory and audit log to the configured user (as
//! systemd's `StateDirectory=` does), switches to that user and group, and is left with no
//! capability at all: empty effective, permitted, inheritable, ambient and bounding sets, and
//! no-new-privs. Started as another user with file or ambient capabilities (systemd's
//! `AmbientCapabilities=CAP_NET_BIND_SERVICE`), it keeps its user and drops the capabilities.
//!
//! Why none is kept: listeners never change on reload (see `reload.rs`), so
//! `CAP_NET_BIND_SERVICE` is needed only for the first bind, which is done before this; a
//! graceful upgrade hands the open sockets over. Everything the gateway reads after the drop
//! (config, users file, policies, certificates, keys) must be readable by the user; the first
//! snapshot is built after the drop so that a file only root can read fails at start, not at
//! the first reload.
//!
//! Threads: capabilities are per thread, so the drop must happen while the process has one
//! thread — before pingora starts its runtimes. [`drop_to`] checks that, and the uid switch
//! goes through glibc's `setresuid`, which applies to every thread anyway.

use std::path::Path;
use std::time::{Duration, Instant};

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid, User};
use serde_json::{Value, json};

/// What to do when started as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootPolicy {
    /// Switch to the configured user (and refuse if that is root).
    Switch,
    /// Stay root with every capability (`--allow-root`, and the demo).
    Stay,
}

/// Whether [`drop_to`] will give up anything (then listeners are opened before it).
pub fn will_drop(policy: RootPolicy) -> bool {
    if Uid::effective().is_root() {
        return policy == RootPolicy::Switch;
    }
    caps::read(None, CapSet::Permitted).is_ok_and(|held| !held.is_empty())
}

/// Gives up privileges; `owned` are paths (files or directories, walked) to hand to the
/// configured user first when switching away from root.
pub fn drop_to(run_as: &RunAs, policy: RootPolicy, owned: &[&Path]) -> Result<(), String> {
    if Uid::effective().is_root() {
        if policy == RootPolicy::Stay {
            tracing::warn!("running as root (--allow-root): privileges are not dropped");
            return Ok(());
        }
        if run_as.uid == 0 {
            return Err(format!(
                "process.user is `{}` (uid 0): hpcgate refuses to run as root; set [process] \
                 user to an unprivileged account, or pass --allow-root",
                run_as.name
            ));
        }
        single_threaded()?;
        for p in owned {
            hand_over(p, run_as)?;
        }
        switch_user(run_as)?;
    } else {
        single_threaded()?;
        tracing::info!(
            user = %current_user_name(),
            "not started as root: keeping this user, dropping capabilities"
        );
    }
    drop_capabilities()?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("cannot set no-new-privs: {e}"))?;
    verify(run_as)?;
    tracing::info!(
        user = %current_user_name(),
        uid = Uid::effective().as_raw(),
        gid = Gid::effective().as_raw(),
        "privileges dropped: no capabilities, no-new-privs"
    );
    Ok(())
}

/// For maintenance commands (`apikey`, `rotate-signing-key`) run as root: become the owner of
/// the state directory (the service user a running gateway handed it to), so that keys and
/// database files they create stay readable by the gateway. Nothing changes when the
/// directory belongs to root or does not exist yet, or when not run as root.
pub fn become_state_owner(state_dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(state_dir) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    let run_as = RunAs {
        name: User::from_uid(Uid::from_raw(meta.uid()))
            .ok()
            .flatten()
            .map_or_else(|| meta.uid().to_string(), |u| u.name),
        uid: meta.uid(),
        gid: meta.gid(),
    };
    switch_user(&run_as)?;
    drop_capabilities()
}

/// Waits briefly for helper threads (SQLite's, a start-up runtime's) to end: capability
/// changes made now would not reach any thread still alive.
fn single_threaded() -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = std::fs::read_dir("/proc/self/task")
            .map_err(|e| format!("cannot read /proc/self/task: {e}"))?
            .count();
        if n == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "internal: {n} threads exist before privileges are dropped; refusing to start \
                 with some of them privileged"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Gives `path` (recursively, without following symbolic links) to the user, so that the
/// database, signing keys and audit log created as root stay usable after the switch.
fn hand_over(path: &Path, run_as: &RunAs) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    std::os::unix::fs::lchown(path, Some(run_as.uid), Some(run_as.gid))
        .map_err(|e| format!("cannot give {} to {}: {e}", path.display(), run_as.name))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            hand_over(&entry.path(), run_as)?;
        }
    }
    Ok(())
}

/// Supplementary groups, then group, then user: after `setresuid` nothing else could change.
/// Leaving uid 0 clears the permitted and effective capability sets (no `SECBIT_KEEP_CAPS`).
fn switch_user(run_as: &RunAs) -> Result<(), String> {
    // The bounding set can only be cleared while CAP_SETPCAP is still held.
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("cannot clear ambient caps: {e}"))?;
    caps::clear(None, CapSet::Bounding)
        .map_err(|e| format!("cannot clear the capability bounding set: {e}"))?;
    let gid = Gid::from_raw(run_as.gid);
    let uid = Uid::from_raw(run_as.uid);
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid {gid}: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| format!("setresuid {uid} ({}): {e}", run_as.name))?;
    Ok(())
}

/// Empties every capability set this process may still hold. The bounding set needs
/// CAP_SETPCAP, which a non-root process rarely has; without it the bounding set stays as
/// given (systemd's `CapabilityBoundingSet=` limits it) and no-new-privs makes it moot.
fn drop_capabilities() -> Result<(), String> {
    fn err(what: &'static str) -> impl Fn(caps::errors::CapsError) -> String {
        move |e| format!("cannot clear {what}: {e}")
    }
    if caps::has_cap(None, CapSet::Permitted, Capability::CAP_SETPCAP).unwrap_or(false) {
        caps::raise(None, CapSet::Effective, Capability::CAP_SETPCAP)
            .map_err(err("CAP_SETPCAP"))?;
        caps::clear(None, CapSet::Bounding).map_err(err("the bounding set"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(err("the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("the inheritable set"))?;
    caps::clear(None, CapSet::Effective).map_err(err("the effective set"))?;
    caps::clear(None, CapSet::Permitted).map_err(err("the permitted set"))?;
    Ok(())
}

/// Fails closed if the switch did not take: better not to serve than to serve as root.
fn verify(run_as: &RunAs) -> Result<(), String> {
    if Uid::effective().is_root() || Uid::current().is_root() {
        return Err(format!(
            "still root after switching to {}: refusing to serve",
            run_as.name
        ));
    }
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Ambient] {
        let held = caps::read(None, set).map_err(|e| format!("cannot read caps: {e}"))?;
        if !held.is_empty() {
            return Err(format!(
                "capabilities still held after dropping them ({set:?}: {held:?})"
            ));
        }
    }
    Ok(())
}

fn current_user_name() -> String {
    let uid = Uid::effective();
    match User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// The process's user and capabilities, for `/-/status` (admins only).
pub fn status() -> Value {
    let set = |s: CapSet| -> Value {
        match caps::read(None, s) {
            Ok(held) => {
                let mut names: Vec<String> = held.iter().map(|c| c.to_string()).collect();
                names.sort();
                json!(names)
            }
            Err(e) => json!(format!("unreadable: {e}")),
        }
    };
    json!({
        "user": current_user_name(),
        "uid": Uid::effective().as_raw(),
        "gid": Gid::effective().as_raw(),
        "no_new_privs": nix::sys::prctl::get_no_new_privs().unwrap_or(false),
        "capabilities": {
            "effective": set(CapSet::Effective),
            "permitted": set(CapSet::Permitted),
            "inheritable": set(CapSet::Inheritable),
            "ambient": set(CapSet::Ambient),
            "bounding": set(CapSet::Bounding),
        },
    })
}

/// A user and group, resolved when the config is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}
