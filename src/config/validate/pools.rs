//! Checks for `[pools.NAME]`: backends, timeouts, upstream TLS and credentials, balancing
//! (with each backend's retention) and the health check.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use super::Validator;
use crate::config::{BackendAddr, Balance, PoolConfig, raw, resolve_path};

impl Validator {
    pub(super) fn pool(&mut self, name: &str, p: raw::Pool) -> PoolConfig {
        let key = format!("pools.{name}");
        if p.backends.is_empty() {
            self.err(
                format!("{key}.backends"),
                "at least one backend is required",
            );
        }
        let mut backends = Vec::new();
        for (i, b) in p.backends.iter().enumerate() {
            match parse_backend(b, &self.base) {
                Ok(addr) => {
                    if backends.contains(&addr) {
                        self.err(
                            format!("{key}.backends[{i}]"),
                            format!("`{b}` is listed twice"),
                        );
                    }
                    backends.push(addr)
                }
                Err(reason) => self.err(format!("{key}.backends[{i}]"), reason),
            }
        }
        let connect_timeout = self.duration(
            &format!("{key}.connect_timeout"),
            p.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let read_timeout = self.duration(
            &format!("{key}.read_timeout"),
            p.read_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let write_timeout = self.duration(
            &format!("{key}.write_timeout"),
            p.write_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let fail_timeout = self.duration(
            &format!("{key}.fail_timeout"),
            p.fail_timeout.as_deref(),
            Duration::from_secs(10),
        );
        for (k, d) in [
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("write_timeout", write_timeout),
        ] {
            if d.is_zero() {
                self.err(format!("{key}.{k}"), "must be greater than 0");
            }
        }
        let tls_ca = p.tls_ca.map(|c| resolve_path(&self.base, &c));
        if let Some(ca) = &tls_ca
            && let Err(e) = crate::process::tls::read_pem_certs(ca, "CA file")
        {
            self.err(format!("{key}.tls_ca"), e);
        }
        let authorization = self.secret(
            &key,
            ("authorization", p.authorization),
            ("authorization_file", p.authorization_file),
        );
        if let Some(a) = &authorization
            && http::HeaderValue::from_str(a.expose()).is_err()
        {
            self.err(
                format!("{key}.authorization"),
                "the value is not a valid header value (control characters?)",
            );
        }
        let balance = match p.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_connections") => Balance::LeastConnections,
            Some("retention") => Balance::Retention,
            Some(other) => {
                self.err(
                    format!("{key}.balance"),
                    format!(
                        "unknown balance `{other}`; use round_robin, least_connections or \
                         retention"
                    ),
                );
                Balance::RoundRobin
            }
        };
        let mut retention = vec![None; backends.len()];
        if !p.retention.is_empty() && balance != Balance::Retention {
            self.err(
                format!("{key}.retention"),
                "only used with balance = \"retention\"",
            );
        }
        for (backend, value) in &p.retention {
            let rkey = format!("{key}.retention.\"{backend}\"");
            let Some(i) = p.backends.iter().position(|b| b == backend) else {
                self.err(
                    rkey,
                    format!("`{backend}` is not one of the pool's backends"),
                );
                continue;
            };
            // Prometheus' own duration syntax (a year is 365 days), as its flags use.
            match promql_parser::util::parse_duration(value) {
                Ok(d) if !d.is_zero() => {
                    if let Some(slot) = retention.get_mut(i) {
                        *slot = Some(d);
                    }
                }
                Ok(_) => self.err(rkey, "must be greater than 0"),
                Err(e) => self.err(
                    rkey,
                    format!("`{value}` is not a Prometheus duration like 15d or 1y: {e}"),
                ),
            }
        }
        PoolConfig {
            name: name.to_string(),
            backends,
            connect_timeout,
            read_timeout,
            write_timeout,
            tls_ca,
            tls_verify: p.tls_verify.unwrap_or(true),
            tls_server_name: p.tls_server_name,
            authorization,
            fail_timeout,
            health_check: self.health_check(&key, p.health_check),
            balance,
            retention,
        }
    }
}

fn parse_backend(b: &str, base: &Path) -> Result<BackendAddr, String> {
    if let Some(path) = b.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(BackendAddr::Unix(resolve_path(base, path)));
    }
    let (tls, rest) = if let Some(r) = b.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = b.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!(
            "`{b}` must start with http://, https:// or unix: (e.g. http://127.0.0.1:9090)"
        ));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!(
            "`{b}` may not have a path; use the route's strip_prefix"
        ));
    }
    let default_port = if tls { 443 } else { 80 };
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{b}`: port `{p}` is not a number from 1 to 65535"))
    };
    let (bare, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{b}`: missing ] after the IPv6 address"))?;
        match after {
            "" => (h, default_port),
            a => (
                h,
                parse_port(
                    a.strip_prefix(':')
                        .ok_or_else(|| format!("`{b}`: junk after ]"))?,
                )?,
            ),
        }
    } else if rest.matches(':').count() > 1 {
        return Err(format!(
            "`{b}`: write IPv6 addresses in brackets, e.g. http://[::1]:9090"
        ));
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (rest, default_port),
        }
    };
    if bare.is_empty() {
        return Err(format!("`{b}` has no host"));
    }
    let addr = (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("`{b}`: cannot resolve {bare}: {e}"))?
        .next()
        .ok_or_else(|| format!("`{b}`: {bare} has no address"))?;
    Ok(BackendAddr::Tcp {
        addr,
        host: bare.to_string(),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn backends_parse() {
        let base = Path::new("/etc/hpcgate");
        assert!(matches!(
            parse_backend("http://127.0.0.1:9090", base).unwrap(),
            BackendAddr::Tcp { tls: false, .. }
        ));
        assert!(matches!(
            parse_backend("https://[::1]:8443", base).unwrap(),
            BackendAddr::Tcp { tls: true, .. }
        ));
        assert_eq!(
            parse_backend("unix:run/a.sock", base).unwrap(),
            BackendAddr::Unix(PathBuf::from("/etc/hpcgate/run/a.sock"))
        );
        assert!(parse_backend("127.0.0.1:80", base).is_err());
        assert!(parse_backend("http://::1:80", base).is_err());
        assert!(parse_backend("http://127.0.0.1:99999", base).is_err());
        assert!(parse_backend("http://127.0.0.1:80/x", base).is_err());
    }
}
