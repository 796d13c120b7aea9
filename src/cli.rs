//! Maintenance commands that work on a gateway's state: `hpcgate apikey …`.

use std::process::ExitCode;

use crate::config::Config;
use crate::db::api_keys::KeyRequest;
use crate::db::{Db, now};

pub enum ApikeyCommand {
    Create {
        user: String,
        name: String,
        groups: Vec<String>,
        scopes: Vec<String>,
        expires: String,
        json: bool,
    },
    List {
        user: Option<String>,
        json: bool,
    },
    Revoke {
        id: String,
    },
}

fn time(t: Option<i64>) -> String {
    match t {
        None => "-".into(),
        Some(t) => time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|d| {
                d.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| t.to_string()),
    }
}

/// Checks a create request against the config before anything is written.
fn check_create(
    config: &Config,
    user: &str,
    name: &str,
    scopes: &[String],
    expires: &str,
) -> Result<Option<i64>, String> {
    if !crate::authenticate::static_users::valid_user_name(user) {
        return Err(format!("`{user}` is not a valid user name"));
    }
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err("--name must be 1 to 100 printable characters".into());
    }
    for s in scopes {
        let known = config
            .routes
            .iter()
            .any(|r| r.name == *s || r.kind.as_str() == s);
        if !known {
            let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
            return Err(format!(
                "--scope `{s}` is neither a route name ({}) nor a route kind in use",
                routes.join(", ")
            ));
        }
    }
    if expires == "never" {
        return Ok(None);
    }
    let d = humantime::parse_duration(expires)
        .map_err(|e| format!("--expires `{expires}`: {e} (like 30d, 12h, or never)"))?;
    if d.as_secs() < 60 {
        return Err("--expires must be at least 1m".into());
    }
    Ok(Some(now() + d.as_secs() as i64))
}

pub fn apikey(config: &Config, cmd: ApikeyCommand) -> Result<ExitCode, String> {
    // Checked (and the expiry computed) before the database is opened.
    let expires_at = match &cmd {
        ApikeyCommand::Create {
            user,
            name,
            scopes,
            expires,
            ..
        } => check_create(config, user, name, scopes, expires)?,
        _ => None,
    };
    if config.database.backend == crate::db::Backend::Sqlite {
        crate::process::tls::create_private_dir(&config.state_dir)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async {
        let db = Db::open(&config.database)
            .await
            .map_err(|e| format!("{} ({})", e, crate::db::describe_url(&config.database.url)))?;
        let code = run(&db, cmd, expires_at).await;
        db.close().await;
        code
    })
}

async fn run(db: &Db, cmd: ApikeyCommand, expires_at: Option<i64>) -> Result<ExitCode, String> {
    match cmd {
        ApikeyCommand::Create {
            user,
            name,
            groups,
            scopes,
            json,
            ..
        } => {
            // The same rule as for every identity: such a group would be dropped at each use.
            if let Some(bad) = groups
                .iter()
                .find(|g| !crate::authenticate::usable_group(g))
            {
                return Err(format!(
                    "group {bad:?}: 1 to 256 bytes, no comma, no control character, no \
                     surrounding white space"
                ));
            }
            let new = db
                .create_key(&KeyRequest {
                    owner: &user,
                    name: &name,
                    groups: &groups,
                    scopes: &scopes,
                    expires_at,
                })
                .await
                .map_err(|e| e.to_string())?;
            if json {
                let mut v = serde_json::to_value(&new.record).map_err(|e| e.to_string())?;
                v["key"] = new.token.into();
                println!("{v}");
            } else {
                println!("{}", new.token);
                eprintln!(
                    "API key {} for {user} (`{name}`), expires {}. This is the only time it is \
                     shown; send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
                    new.record.id,
                    time(new.record.expires_at)
                );
            }
        }
        ApikeyCommand::List { user, json } => {
            let keys = db
                .list_keys(user.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&keys).map_err(|e| e.to_string())?
                );
            } else {
                println!("ID\tOWNER\tNAME\tSCOPES\tCREATED\tEXPIRES\tLAST USED\tSTATE");
                let now = now();
                for k in keys {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.owner,
                        k.name,
                        if k.scopes.is_empty() {
                            "*".into()
                        } else {
                            k.scopes.join(",")
                        },
                        time(Some(k.created_at)),
                        time(k.expires_at),
                        time(k.last_used_at),
                        match k.unusable(now) {
                            None => "live",
                            Some(_) if k.revoked_at.is_some() => "revoked",
                            Some(_) => "expired",
                        }
                    );
                }
            }
        }
        ApikeyCommand::Revoke { id } => {
            if db.revoke_key(&id, None).await.map_err(|e| e.to_string())? {
                println!("revoked {id}");
            } else {
                return Err(format!(
                    "no live key with id `{id}` (see `hpcgate apikey list`)"
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
