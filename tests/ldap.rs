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

/// Status, `WWW-Authenticate` and body of an answer: all a client can tell apart.
async fn answer(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, challenge, r.text().await.unwrap())
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_one_answer_and_one_throttle() {
    let ldap = RealServer::start("slapd");
    let up = Recorder::start(Duration::ZERO).await;
    let routes = "[[routes]]\nname = \"static\"\npath_prefix = \"/static\"\npool = \"up\"\n\
         authenticators = [\"local\"]\n\
         [[routes]]\nname = \"both\"\npath_prefix = \"/both\"\npool = \"up\"\n\
         authenticators = [\"local\", \"directory\"]\n\
         [[routes]]\nname = \"either\"\npath_prefix = \"/either\"\npool = \"up\"\n\
         authenticators = [\"directory\", \"local\"]\n";
    let body = ldap_body(&ldap, ldap.get("LDAP_URL"), &up, "max_failures = 100") + routes;
    let gw = Gateway::start(Setup {
        body,
        extra_users: vec![("carol".into(), vec![])],
        ..Default::default()
    })
    .await;
    let at = |path: &'static str, user: &'static str, pw: &'static str| {
        gw.client(true)
            .get(gw.url(path))
            .header("authorization", basic(user, pw))
            .send()
    };
    // The directory, the users file, and both in one chain: an unknown user and a known
    // user's wrong password are the same answer.
    for path in ["/hpc/x", "/static/x", "/both/x", "/either/x"] {
        let wrong = answer(at(path, "alice", "wrong").await.unwrap()).await;
        let unknown = answer(at(path, "mallory", "wrong").await.unwrap()).await;
        assert_eq!(wrong.0, 401, "{path}: {wrong:?}");
        assert_eq!(wrong, unknown, "{path}");
    }
    // A user the directory does not know is still the next authenticator's to accept.
    assert_eq!(
        at("/either/x", "carol", "carol-pw").await.unwrap().status(),
        200
    );
    // A name the search does not find costs a bind all the same (timing).
    let nobody = format!("cn=hpcgate-no-such-user,{}", ldap.get("LDAP_USER_BASE"));
    assert!(binds(&ldap, &nobody) >= 1, "no bind for an unknown user");

    // Guessing names is throttled like guessing passwords: three refused unknown names
    // (however spelt), then 429 before anything is asked.
    let body = ldap_body(&ldap, ldap.get("LDAP_URL"), &up, "max_failures = 3");
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    for user in ["nobody", "NOBODY", "Nobody"] {
        assert_eq!(get(&gw, user, "x").await.status(), 401, "{user}");
    }
    expect_error(get(&gw, "nobody", "x").await, 429, "too_many_requests").await;
}

/// A gateway whose `/static` route takes the users file only (`local`), in front of `up`.
async fn static_gateway(up: &Recorder, extra_users: Vec<(String, Vec<String>)>) -> Gateway {
    let body = format!(
        "[pools.up]\nbackends = [\"http://{}\"]\n\
         [[routes]]\nname = \"static\"\npath_prefix = \"/static\"\npool = \"up\"\n\
         authenticators = [\"local\"]\n",
        up.addr
    );
    Gateway::start(Setup {
        body,
        extra_users,
        ..Default::default()
    })
    .await
}

async fn get_static(gw: &Gateway, user: &str, pw: &str) -> reqwest::Response {
    gw.client(true)
        .get(gw.url("/static/x"))
        .header("authorization", basic(user, pw))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn unknown_static_users_are_throttled_too() {
    let up = Recorder::start(Duration::ZERO).await;
    let gw = static_gateway(&up, Vec::new()).await;
    // The users file's default budget: ten failures per name.
    for i in 0..10 {
        let r = get_static(&gw, "mallory", &format!("guess-{i}")).await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    let r = get_static(&gw, "mallory", "guess-again").await;
    expect_error(r, 429, "too_many_requests").await;
}

#[tokio::test]
async fn ldap_identities_use_the_directory_spelling_of_the_name() {
    let ldap = RealServer::start("slapd");
    let up = Recorder::start(Duration::ZERO).await;
    let body = ldap_body(&ldap, ldap.get("LDAP_URL"), &up, "");
    let gw = Gateway::start(Setup {
        body,
        gateway_authenticators: vec!["directory".into()],
        ..Default::default()
    })
    .await;
    let bob_pw = ldap.get("BOB_PASSWORD").to_string();
    for typed in ["BOB", "Bob", "bob"] {
        let r = get(&gw, typed, &bob_pw).await;
        assert_eq!(r.status(), 200, "{typed}: {}", r.text().await.unwrap());
        assert_eq!(up.last().one("x-forwarded-user"), Some("bob"), "{typed}");
        let who: serde_json::Value = gw
            .client(true)
            .get(gw.url("/-/whoami"))
            .header("authorization", basic(typed, &bob_pw))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(who["data"]["user"], "bob", "{typed}: {who}");
    }
    // The audit log knows one user, not three.
    let audit = gw.audit();
    assert!(
        audit
            .iter()
            .filter(|a| a["route"] == "hpc")
            .all(|a| a["user"] == "bob"),
        "{audit:?}"
    );
}

/// Adds entries to the test directory as its admin.
fn ldap_add(ldap: &RealServer, ldif: &str) {
    let path = ldap.dir.path().join("extra.ldif");
    std::fs::write(&path, ldif).unwrap();
    let out = std::process::Command::new("ldapadd")
        .args([
            "-x",
            "-H",
            ldap.get("LDAP_URL"),
            "-D",
            ldap.get("LDAP_ADMIN_DN"),
        ])
        .args(["-w", ldap.get("LDAP_ADMIN_PASSWORD"), "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ldapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn ldap_group_names_that_cannot_be_carried_are_dropped() {
    use base64::Engine;
    let ldap = RealServer::start("slapd");
    let groups = ldap.get("LDAP_GROUP_BASE").to_string();
    let bob = ldap.get("BOB_DN").to_string();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // Group names from `description`, which may hold anything: one usable, the rest not.
    let mut ldif = String::new();
    for (cn, name) in [
        ("g-ok", b64("proj-ok")),
        ("g-comma", b64("proj-a,proj-b")),
        ("g-newline", b64("proj\nx")),
        ("g-space", b64(" hpc-admins")),
        ("g-tab", b64("proj\tx")),
    ] {
        ldif.push_str(&format!(
            "dn: cn={cn},{groups}\nobjectClass: groupOfNames\ncn: {cn}\n\
             description:: {name}\nmember: {bob}\n\n"
        ));
    }
    ldap_add(&ldap, &ldif);
    let up = Recorder::start(Duration::ZERO).await;
    let body = ldap_body(
        &ldap,
        ldap.get("LDAP_URL"),
        &up,
        &format!(
            "group_base = \"{groups}\"\ngroup_filter = \"(member={{dn}})\"\n\
             group_name_attribute = \"description\""
        ),
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let r = get(&gw, "bob", ldap.get("BOB_PASSWORD")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(up.last().one("x-forwarded-groups"), Some("proj-ok"));
    let log = gw.log_text();
    assert!(
        log.contains("group name dropped") && log.contains("directory"),
        "the drop is logged with its source"
    );
}

#[tokio::test]
async fn users_file_group_names_that_cannot_be_carried_are_dropped() {
    let up = Recorder::start(Duration::ZERO).await;
    let carol = (
        "carol".to_string(),
        vec!["".into(), "a,b".into(), "proj-c".into(), "x\ty".into()],
    );
    let gw = static_gateway(&up, vec![carol]).await;
    let r = get_static(&gw, "carol", "carol-pw").await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().one("x-forwarded-groups"), Some("proj-c"));
}

/// Before group names were checked where identities are made, an empty group of a users
/// file made `value = "groups"` enforcement confine to an alternation with an empty branch,
/// which also matches series without the label.
#[tokio::test]
async fn empty_group_names_never_widen_promql_group_enforcement() {
    let up = Recorder::start(Duration::ZERO).await;
    let body = format!(
        "[pools.prom]\nbackends = [\"http://{}\"]\n\
         [[routes]]\nname = \"projects\"\npath_prefix = \"/prometheus\"\nstrip_prefix = true\n\
         pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n\
         promql = {{ mode = \"label\", label = \"project\", value = \"groups\" }}\n",
        up.addr
    );
    let gw = Gateway::start(Setup {
        body,
        extra_users: vec![("carol".into(), vec!["".into(), "proj-c".into()])],
        ..Default::default()
    })
    .await;
    let r = gw
        .client(true)
        .get(gw.url("/prometheus/api/v1/query?query=up"))
        .header("authorization", basic("carol", "carol-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let audit = gw.last_audit("projects").await;
    assert_eq!(audit["promql"], r#"up{project="proj-c"}"#, "{audit}");
    let uri = up.last().uri;
    assert!(!uri.contains("%7C") && !uri.contains('|'), "{uri}");
}
