//! `Host` and `:authority` values: `host[:port]` and nothing else.

use super::bad;
use crate::error::Rejection;

/// Checks a `Host` value or a target's authority against RFC 3986 `host[:port]`: a DNS name
/// (letters, digits, `-`, `_`, dots between labels, one trailing dot), an IPv4 address, or a
/// bracketed IPv6 literal; the port, if any, digits only. Anything else could be read as
/// another host by some parser, or carry text into `Forwarded`.
pub fn check_authority(value: &str, what: &str) -> Result<(), Rejection> {
    let refuse = || {
        bad(format!(
            "malformed {what}: expected host[:port] (a DNS name, an IPv4 address or a \
             bracketed IPv6 address, and digits for the port)"
        ))
    };
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(refuse)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| refuse())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(refuse)?)),
        }
    } else {
        match value.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(value), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return Err(refuse());
    }
    if let Some(h) = host {
        let labels = h.strip_suffix('.').unwrap_or(h);
        if labels.is_empty()
            || labels.len() > 253
            || labels.split('.').any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || !l
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        {
            return Err(refuse());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_must_be_host_and_port() {
        for ok in [
            "gw",
            "gw.example",
            "gw.example.",
            "gw.example:8443",
            "gw-1.example_internal.org",
            "10.0.0.1",
            "10.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::1]",
        ] {
            assert!(check_authority(ok, "Host").is_ok(), "{ok} should pass");
        }
        for bad in [
            "",
            "a\",for=6.6.6.6;proto=https;host=\"b",
            "a,b",
            "a;b",
            "a b",
            "user@gw",
            "gw/x",
            "gw\\x",
            "gw:",
            "gw:x",
            "gw:99999",
            "gw:80:80",
            "gw..example",
            ".gw",
            "gw.example..",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[fe80::1%25eth0]",
            "[gw]",
            "::1",
            "g\u{e9}w",
        ] {
            assert!(
                check_authority(bad, "Host").is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
