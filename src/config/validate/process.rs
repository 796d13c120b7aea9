//! `[process]`: the user to run as (resolved now, so a typo is a config error and not a
//! failure after the listeners are open), the pid file, the upgrade socket and the
//! certificate watch.

use std::path::Path;
use std::time::Duration;

use nix::unistd::{Group, User};

use super::{Validator, raw};
use crate::config::{Process, RunAs, resolve_path};

impl Validator {
    pub(super) fn process(&mut self, p: raw::Process, state_dir: &Path) -> Process {
        let user = self.run_as(p.user.as_deref(), p.group.as_deref());
        let file = |v: Option<&str>, default: &str| match v {
            Some(v) => resolve_path(&self.base, v),
            None => state_dir.join(default),
        };
        let pid_file = file(p.pid_file.as_deref(), "hpcgate.pid");
        let upgrade_socket = file(p.upgrade_socket.as_deref(), "upgrade.sock");
        let watch = self.duration(
            "process.watch_certificates",
            p.watch_certificates.as_deref(),
            Duration::from_secs(60),
        );
        Process {
            user,
            pid_file,
            upgrade_socket,
            watch_certificates: (!watch.is_zero()).then_some(watch),
        }
    }

    fn run_as(&mut self, user: Option<&str>, group: Option<&str>) -> RunAs {
        let name = user.unwrap_or("nobody");
        let fallback = RunAs {
            name: name.to_string(),
            uid: 65534,
            gid: 65534,
        };
        let found = match User::from_name(name) {
            Ok(Some(u)) => u,
            Ok(None) => {
                self.err("process.user", format!("no user `{name}` on this system"));
                return fallback;
            }
            Err(e) => {
                self.err("process.user", format!("cannot look up `{name}`: {e}"));
                return fallback;
            }
        };
        let gid = match group {
            None => found.gid.as_raw(),
            Some(g) => match Group::from_name(g) {
                Ok(Some(g)) => g.gid.as_raw(),
                Ok(None) => {
                    self.err("process.group", format!("no group `{g}` on this system"));
                    found.gid.as_raw()
                }
                Err(e) => {
                    self.err("process.group", format!("cannot look up `{g}`: {e}"));
                    found.gid.as_raw()
                }
            },
        };
        RunAs {
            name: name.to_string(),
            uid: found.uid.as_raw(),
            gid,
        }
    }
}
