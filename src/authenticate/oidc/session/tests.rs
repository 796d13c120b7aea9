//! Unit tests of the sealed session cookie: sealing, renewal, splitting over several
//! cookies, expiry and ids.

use super::*;

fn key(b: u8) -> CookieKey {
    CookieKey::new(&[b; 32]).unwrap()
}

fn session(now: u64) -> Session {
    Session {
        id: new_session_id().unwrap(),
        expires: now + 3600,
        sub: "alice".into(),
        user: "alice".into(),
        groups: vec!["hpc-users".into()],
        email: None,
        created: now,
        seen: now,
        refresh_at: now + 300,
        refresh_token: Some("rt".into()),
    }
}

#[test]
fn sealed_cookies_open_only_unaltered_with_the_same_key_and_name() {
    let s = session(1000);
    let sealed = key(1).seal(SESSION_COOKIE, &s).unwrap();
    let opened: Session = key(1).open(SESSION_COOKIE, &sealed).unwrap();
    assert!(opened == s);
    assert!(key(2).open::<Session>(SESSION_COOKIE, &sealed).is_none());
    assert!(key(1).open::<Session>(LOGIN_COOKIE, &sealed).is_none());
    // Any flipped character is refused.
    for i in [0, sealed.len() / 2, sealed.len() - 1] {
        let mut bytes = sealed.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(key(1).open::<Session>(SESSION_COOKIE, &tampered).is_none());
    }
    assert!(key(1).open::<Session>(SESSION_COOKIE, "").is_none());
    assert!(key(1).open::<Session>(SESSION_COOKIE, "!!").is_none());
    // Fresh nonces: the same session never seals the same way twice.
    assert_ne!(sealed, key(1).seal(SESSION_COOKIE, &s).unwrap());
}

#[test]
fn sessions_expire_absolutely_and_when_idle() {
    let l = Lifetimes {
        absolute: Duration::from_secs(3600),
        idle: Duration::from_secs(600),
        refresh: Duration::from_secs(300),
    };
    let mut s = session(10_000);
    assert!(!s.expired(10_599, &l));
    assert!(s.expired(10_600, &l), "idle");
    s.seen = 13_500;
    assert!(!s.expired(13_599, &l));
    assert!(s.expired(13_600, &l), "absolute, although not idle");
    assert_eq!(s.max_age(13_000, &l), 600);
    assert!(
        s.expired(13_439, &l),
        "written more than a minute in the future"
    );
    assert!(!s.renew_due(13_559, &l));
    assert!(s.renew_due(13_560, &l));
    assert!(s.refresh_due(10_300) && !s.refresh_due(10_299));
}

/// Raising `session_lifetime` must not bring back a session that logout ended: its
/// entry in the list of ended sessions is purged at the expiry fixed at login.
#[test]
fn a_longer_session_lifetime_does_not_lengthen_a_session() {
    let l = Lifetimes {
        absolute: Duration::from_secs(3600),
        idle: Duration::from_secs(600),
        refresh: Duration::from_secs(300),
    };
    let mut s = session(10_000);
    s.seen = 13_500;
    let longer = Lifetimes {
        absolute: Duration::from_secs(7200),
        ..l
    };
    assert_eq!(s.ends_at(&longer), 13_600);
    assert!(s.expired(13_600, &longer));
    let shorter = Lifetimes {
        absolute: Duration::from_secs(1800),
        ..l
    };
    assert_eq!(s.ends_at(&shorter), 11_800, "a shorter one applies at once");
    assert_eq!(s.max_age(11_000, &shorter), 800);
}

#[test]
fn session_ids_are_random_and_cookies_without_one_do_not_open() {
    let a = new_session_id().unwrap();
    assert_eq!(a.len(), 22);
    assert_ne!(a, new_session_id().unwrap());
    // A session sealed before ids existed cannot be ended by logout: refused.
    let mut old = serde_json::to_value(session(1000)).unwrap();
    old.as_object_mut().unwrap().remove("id");
    let sealed = key(1).seal(SESSION_COOKIE, &old).unwrap();
    assert!(key(1).open::<Session>(SESSION_COOKIE, &sealed).is_none());
}

#[test]
fn cookies_are_found_across_headers() {
    let mut h = http::HeaderMap::new();
    h.append("cookie", "a=1; __Host-hpcgate-session=x".parse().unwrap());
    h.append("cookie", "__Host-hpcgate-session=y".parse().unwrap());
    let found: Vec<&str> = cookie_values(&h, SESSION_COOKIE).collect();
    assert_eq!(found, ["x", "y"]);
    assert_eq!(
        clear_cookie(LOGIN_COOKIE),
        "__Host-hpcgate-login=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    );
}

/// A request carrying `pairs` as cookies (and a site cookie), in one `Cookie` header.
fn request_with(pairs: &[(String, String)]) -> http::HeaderMap {
    let mut line = String::from("site=1");
    for (n, v) in pairs {
        line.push_str(&format!("; {n}={v}"));
    }
    let mut h = http::HeaderMap::new();
    h.append("cookie", line.parse().unwrap());
    h
}

fn opened(h: &http::HeaderMap) -> Vec<Session> {
    key(1).open_split(h, SESSION_COOKIE).collect()
}

#[test]
fn a_big_session_is_split_over_several_cookies_and_joined_again() {
    // Small: one cookie, as before splitting existed.
    let small = session(1000);
    let pairs = key(1).seal_split(SESSION_COOKIE, &small).unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].0, SESSION_COOKIE);
    assert!(!pairs[0].1.contains('.'));
    assert!(opened(&request_with(&pairs)) == [small.clone()]);
    let one = key(1).seal(SESSION_COOKIE, &small).unwrap();
    assert!(opened(&request_with(&[(SESSION_COOKIE.into(), one)])) == [small]);

    // A user in 300 groups: several cookies, each within what a browser keeps.
    let mut big = session(1000);
    big.groups = (0..300)
        .map(|i| format!("project-{i:04}-members"))
        .collect();
    let pairs = key(1).seal_split(SESSION_COOKIE, &big).unwrap();
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            SESSION_COOKIE,
            "__Host-hpcgate-session-1",
            "__Host-hpcgate-session-2",
        ]
    );
    assert!(pairs[0].1.starts_with("3."));
    assert!(pairs.iter().all(|(n, v)| n.len() + v.len() <= MAX_COOKIE));
    assert!(opened(&request_with(&pairs)) == [big.clone()]);
    // Spread over several Cookie headers (HTTP/2), in another order: the same.
    let mut h = http::HeaderMap::new();
    for (n, v) in pairs.iter().rev() {
        h.append("cookie", format!("{n}={v}").parse().unwrap());
    }
    assert!(opened(&h) == [big.clone()]);

    // A part missing, swapped, altered or from another session: nothing opens.
    assert!(opened(&request_with(&pairs[..2])).is_empty());
    let mut swapped = pairs.clone();
    let (a, b) = (swapped[1].1.clone(), swapped[2].1.clone());
    swapped[1].1 = b;
    swapped[2].1 = a;
    assert!(opened(&request_with(&swapped)).is_empty());
    let mut altered = pairs.clone();
    altered[0].1 = altered[0].1.replacen("3.", "2.", 1);
    assert!(opened(&request_with(&altered)).is_empty());
    altered[0].1 = altered[0].1.replacen("2.", "99.", 1);
    assert!(opened(&request_with(&altered)).is_empty());
    let other = key(1).seal_split(SESSION_COOKIE, &big).unwrap();
    let mut mixed = pairs.clone();
    mixed[2] = other[2].clone();
    assert!(opened(&request_with(&mixed)).is_empty());
    // Parts beyond the count (left from a bigger session) are not read.
    let mut more = pairs.clone();
    more.push(("__Host-hpcgate-session-3".into(), "left-over".into()));
    assert!(opened(&request_with(&more)) == [big.clone()]);

    // Beyond MAX_SESSION_COOKIES: refused with the reason, not cut.
    big.groups = (0..3000)
        .map(|i| format!("project-{i:04}-members"))
        .collect();
    let e = key(1).seal_split(SESSION_COOKIE, &big).unwrap_err();
    assert!(e.contains("more than 8 cookies"), "{e}");
}

#[test]
fn writing_a_smaller_session_removes_the_parts_of_the_bigger_one() {
    let old: Vec<(String, String)> = [SESSION_COOKIE, "__Host-hpcgate-session-1"]
        .iter()
        .chain(&["__Host-hpcgate-session-2", "__Host-hpcgate-session-3"])
        .map(|n| (n.to_string(), "x".to_string()))
        .collect();
    let h = request_with(&old);
    let new = [
        (SESSION_COOKIE.to_string(), "2.a".to_string()),
        ("__Host-hpcgate-session-1".to_string(), "b".to_string()),
    ];
    let set = set_split_cookies(&h, SESSION_COOKIE, &new, 60);
    assert_eq!(
        set,
        [
            set_cookie(SESSION_COOKIE, "2.a", 60),
            set_cookie("__Host-hpcgate-session-1", "b", 60),
            clear_cookie("__Host-hpcgate-session-2"),
            clear_cookie("__Host-hpcgate-session-3"),
        ]
    );
    let cleared = clear_split_cookies(&h, SESSION_COOKIE);
    assert_eq!(cleared.len(), 4);
    assert!(cleared.iter().all(|c| c.ends_with("Max-Age=0")));
    // Without parts in the request, only the one cookie.
    assert_eq!(
        clear_split_cookies(&http::HeaderMap::new(), SESSION_COOKIE),
        [clear_cookie(SESSION_COOKIE)]
    );
}

#[test]
fn key_files_are_created_private_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/session.key");
    let k1 = load_or_create_key(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(load_or_create_key(&path).unwrap(), k1);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(load_or_create_key(&path).unwrap_err().contains("chmod 600"));
    std::fs::write(dir.path().join("short"), "c2hvcnQ=\n").unwrap();
    assert!(read_key_file(&dir.path().join("short")).is_err());
}
