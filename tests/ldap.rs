//! The `ldap` authenticator against a real OpenLDAP (tests/servers/slapd.sh): binds, groups,
//! injection, caching and brute-force protection counted in slapd's own log, and a directory
//! that is down or never answers.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn ldap_body(ldap: &RealServer, url: &str, up: &Recorder, extra: &str) -> String {
    format!(
        "[authenticators.directory]\ntype = \"ldap\"\nurl = \"{url}\"\nbind_dn = \"{}\"\n\
         bind_password = \"{}\"\nuser_base = \"{}\"\n\
         user_filter = \"(&(objectClass=inetOrgPerson)(uid={{user}}))\"\ntimeout = \"1s\"\n{extra}\n\
         [pools.up]\nbackends = [\"http://{}\"]\n\
         [[routes]]\nname = \"hpc\"\npath_prefix = \"/hpc\"\npool = \"up\"\n\
         authenticators = [\"directory\"]\n",
        ldap.get("LDAP_BIND_DN"),
        ldap.get("LDAP_BIND_PASSWORD"),
        ldap.get("LDAP_USER_BASE"),
        up.addr
    )
}

/// BIND operations slapd logged for `dn` (one `… BIND dn="…" method=128` line per bind
/// attempt; a successful one adds a `mech=SIMPLE` line, not counted).
fn binds(ldap: &RealServer, dn: &str) -> usize {
    std::fs::read_to_string(ldap.get("LDAP_LOG"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("BIND dn=\"{dn}\" method=")))
        .count()
}

async fn get(gw: &Gateway, user: &str, pw: &str) -> reqwest::Response {
    gw.client(true)
        .get(gw.url("/hpc/x"))
        .header("authorization", basic(user, pw))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn directory_users_get_in_with_their_groups_and_nobody_else_does() {
    let ldap = RealServer::start("slapd");
    let up = Recorder::start(Duration::ZERO).await;
    let body = ldap_body(&ldap, ldap.get("LDAP_URL"), &up, "cache_ttl = \"60s\"");
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let alice_pw = ldap.get("ALICE_PASSWORD").to_string();
    let alice_dn = ldap.get("ALICE_DN").to_string();
    // The start script's own checks may have bound as alice already.
    let baseline = binds(&ldap, &alice_dn);

    let r = get(&gw, "alice", &alice_pw).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-user"), Some("alice"));
    let groups: Vec<&str> = seen.one("x-forwarded-groups").unwrap().split(',').collect();
    assert!(groups.contains(&"hpc-admins"), "{groups:?}");
    assert_eq!(seen.one("x-forwarded-email"), Some("alice@example.org"));

    // Cached: the directory is not asked again.
    let before = binds(&ldap, &alice_dn);
    assert_eq!(
        before,
        baseline + 1,
        "one bind as alice for the first request"
    );
    for _ in 0..3 {
        assert_eq!(get(&gw, "alice", &alice_pw).await.status(), 200);
    }
    assert_eq!(binds(&ldap, &alice_dn), before);

    // Wrong password, and unknown users.
    expect_error(get(&gw, "alice", "wrong").await, 401, "unauthorized").await;
    expect_error(get(&gw, "mallory", "x").await, 401, "unauthorized").await;

    // Injection attempts never reach the directory as a filter.
    for evil in ["*)(uid=*", "*", "alice)(|(uid=*", "admin*", "a\\2a"] {
        expect_error(get(&gw, evil, "x").await, 401, "unauthorized").await;
    }
    let log = std::fs::read_to_string(ldap.get("LDAP_LOG")).unwrap();
    assert!(
        !log.lines()
            .any(|l| l.contains("SRCH") && (l.contains("uid=*") || l.contains("(|"))),
        "a broadened search reached slapd"
    );
    assert_eq!(
        up.requests().len(),
        4,
        "only alice's requests went upstream"
    );
}

#[tokio::test]
async fn ten_wrong_passwords_lock_out_without_asking_the_directory() {
    let ldap = RealServer::start("slapd");
    let up = Recorder::start(Duration::ZERO).await;
    let body = ldap_body(
        &ldap,
        ldap.get("LDAP_URL"),
        &up,
        "max_failures = 10\nfailure_window = \"5m\"",
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let bob_dn = ldap.get("BOB_DN").to_string();
    let baseline = binds(&ldap, &bob_dn);
    for i in 0..10 {
        let r = get(&gw, "bob", &format!("guess-{i}")).await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    assert_eq!(binds(&ldap, &bob_dn), baseline + 10);
    for _ in 0..2 {
        let r = get(&gw, "bob", "guess-again").await;
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=300).contains(&retry));
        expect_error(r, 429, "too_many_requests").await;
    }
    // Even the right password waits: the directory saw no more binds for bob.
    let r = get(&gw, "bob", ldap.get("BOB_PASSWORD")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(binds(&ldap, &bob_dn), baseline + 10);
}

#[tokio::test]
async fn a_directory_that_is_down_or_silent_gets_503_never_200() {
    let ldap = RealServer::start("slapd");
    let up = Recorder::start(Duration::ZERO).await;
    let body = ldap_body(&ldap, ldap.get("LDAP_URL"), &up, "cache_ttl = \"2s\"");
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let (alice_pw, bob_pw) = (
        ldap.get("ALICE_PASSWORD").to_string(),
        ldap.get("BOB_PASSWORD").to_string(),
    );
    assert_eq!(get(&gw, "alice", &alice_pw).await.status(), 200);
    ldap.stop();
    // Not cached: 503 at once.
    expect_error(get(&gw, "bob", &bob_pw).await, 503, "unavailable").await;
    // Cached until the TTL, then 503 as well.
    assert_eq!(get(&gw, "alice", &alice_pw).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    expect_error(get(&gw, "alice", &alice_pw).await, 503, "unavailable").await;

    // A directory that accepts the connection and never answers: 503 within the timeout.
    let silent = hanging_backend().await;
    let up2 = Recorder::start(Duration::ZERO).await;
    let body = ldap_body(&ldap, &format!("ldap://{silent}"), &up2, "");
    let gw2 = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let start = Instant::now();
    expect_error(get(&gw2, "alice", &alice_pw).await, 503, "unavailable").await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(up2.requests().is_empty());
    // The gateway keeps serving its other endpoints meanwhile.
    let r = gw2
        .client(true)
        .get(gw2.url("/-/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn directory_users_get_a_gateway_token_with_their_groups() {
    let ldap = RealServer::start("slapd");
    let up = Recorder::start(Duration::ZERO).await;
    let body = ldap_body(&ldap, ldap.get("LDAP_URL"), &up, "").replace(
        "authenticators = [\"directory\"]",
        "authenticators = [\"tokens\"]",
    ) + "[authenticators.tokens]\ntype = \"gateway_jwt\"\n\
           [tokens]\nauthenticators = [\"directory\"]\n";
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let post = |user: &str, pw: &str| {
        gw.client(false)
            .post(gw.url("/auth/token"))
            .header("authorization", basic(user, pw))
            .send()
    };
    let r = post("alice", ldap.get("ALICE_PASSWORD")).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let token = v["access_token"].as_str().unwrap();
    let r = gw
        .client(false)
        .get(gw.url("/hpc/x"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-user"), Some("alice"));
    let groups = seen.one("x-forwarded-groups").unwrap();
    assert!(groups.split(',').any(|g| g == "hpc-admins"), "{groups}");
    let r = post("alice", "wrong").await.unwrap();
    expect_error(r, 401, "unauthorized").await;
    // Basic credentials are not accepted on the token-only route.
    let r = get(&gw, "alice", ldap.get("ALICE_PASSWORD")).await;
    expect_error(r, 401, "unauthorized").await;
}
