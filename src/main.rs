//! The `hpcgate` command line. Everything it does lives in the library.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hpcgate::config;
use hpcgate::process::{demo, server, telemetry, tls};

#[derive(Parser)]
#[command(
    name = "hpcgate",
    version,
    about = "Authenticating gateway for HPC centres"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config: the embedded demo in ./hpcgate-demo/.
    Serve {
        /// The config file (see config/hpcgate.toml for every key).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Keep running as root when started as root (not for production: by default
        /// hpcgate switches to `[process] user` once its listeners are open).
        #[arg(long)]
        allow_root: bool,
        /// Take the listeners over from the running gateway (send it SIGQUIT after starting
        /// this one): pingora's graceful upgrade, through `[process] upgrade_socket`.
        #[arg(long, short)]
        upgrade: bool,
    },
    /// Make the running gateway re-read its config (checked here first; sends SIGHUP to
    /// the pid in `[process] pid_file`).
    Reload {
        /// The gateway's config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file; print FILE:KEY: reason for every problem and exit 1 if any.
    CheckConfig {
        /// The config file.
        file: PathBuf,
        /// Also try to reach every upstream backend, LDAP server, IdP, Redis and PostgreSQL
        /// the config names (one line each; exit 1 if any is unreachable).
        #[arg(long)]
        online: bool,
        /// How long each online check may take.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Make a development CA and a server certificate signed by it.
    GenCert {
        /// Where to write ca.pem, ca-key.pem, server.pem and server-key.pem.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// DNS names or IP addresses of the server (repeatable).
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
        names: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Hash a password (read from standard input) for a `static` users file.
    HashPassword,
    /// Create, list and revoke API keys in the gateway's database.
    Apikey {
        /// The gateway's config file (for its database). Default: the demo's.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: ApikeyAction,
    },
    /// Make a new token signing key current (the previous two stay valid for verification).
    RotateSigningKey {
        /// The gateway's config file (for its state directory). Default: the demo's.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The accounting service on its own (for separate replicas behind the gateways).
    Accounting {
        #[command(subcommand)]
        action: AccountingAction,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum AccountingAction {
    /// Serve the accounting API on `[accounting] listen` (TCP; gateways must present
    /// `[accounting] shared_secret`), with the config's database.
    Serve {
        /// The config file (its [accounting], [database] and [authorization] admin_groups).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ApikeyAction {
    /// Make a key; it is printed once and only its hash is stored.
    Create {
        /// The key's owner: requests with it act as this user.
        #[arg(long)]
        user: String,
        /// A name for the key, unique among the owner's live keys.
        #[arg(long)]
        name: String,
        /// Groups the key carries (repeatable); policies see them as the owner's.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Route names or kinds the key may be used on (repeatable). Default: every route.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, like 30d or 12h, or `never`.
        #[arg(long, default_value = "90d")]
        expires: String,
        /// Print JSON (with the key) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Only this owner's.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id; every gateway refuses it within a second.
    Revoke {
        /// The key id (from `apikey list`).
        id: String,
    },
}

fn main() -> ExitCode {
    big_blocks_in_own_mappings();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hpcgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc raises its mmap threshold to the largest block freed so far (up to 32 MiB)
/// and from then on carves such blocks out of per-thread arenas, which keep the memory after
/// it is freed. An argon2 password check takes one ~19 MiB block on whichever blocking thread
/// runs it, so a burst of logins would pin ~19 MiB in every arena (up to 8 per core) for the
/// life of the process (seen in the soak: +570 MiB RSS in ten seconds, never returned). A
/// fixed threshold keeps blocks of 1 MiB and more in their own mappings, unmapped on free.
fn big_blocks_in_own_mappings() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, here before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Version => {
            println!("hpcgate {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig {
            file,
            online,
            timeout,
        } => match config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: OK ({} listeners, {} pools, {} authenticators, {} routes)",
                    file.display(),
                    c.listeners.len(),
                    c.pools.len(),
                    c.authenticators.len(),
                    c.routes.len()
                );
                if online {
                    return check_online(&c, &file, timeout);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors.0 {
                    println!("{e}");
                }
                eprintln!("{}: {} problem(s)", file.display(), errors.0.len());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::GenCert { dir, names, force } => {
            let out = tls::generate_dev_certs(&dir, &names, force)?;
            println!(
                "wrote {} (trust this CA in clients), {} and {}",
                out.ca_cert.display(),
                out.server_cert.display(),
                out.server_key.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("password (echoed; pipe it in to avoid that): ");
            }
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password: {e}"))?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err("empty password".into());
            }
            println!(
                "{}",
                hpcgate::authenticate::static_users::hash_password(password)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            allow_root,
            upgrade,
        } => serve(config, allow_root, upgrade),
        Command::Reload { config } => {
            let c = config::load(&config).map_err(|e| {
                format!(
                    "{} has problems; nothing was sent (the running gateway keeps its \
                     config):\n{e}",
                    config.display()
                )
            })?;
            let pid = hpcgate::process::reload::signal_running(&c)?;
            println!(
                "{}: OK; sent SIGHUP to hpcgate (pid {pid}); its log says `config reloaded` \
                 or why it kept the running config",
                config.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Accounting {
            action: AccountingAction::Serve { config },
        } => {
            let config = config::load(&config).map_err(|e| format!("refusing to start:\n{e}"))?;
            telemetry::init_logging(&config.logging);
            hpcgate::accounting::standalone(
                &config.path,
                config.accounting.as_ref(),
                &config.database,
                &config.state_dir,
                config.threads,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Apikey { config, action } => {
            let config = load_for_cli(config)?;
            hpcgate::cli::apikey(&config, action.into())
        }
        Command::RotateSigningKey { config } => {
            let config = load_for_cli(config)?;
            let kid = hpcgate::tokens::rotate(&config.state_dir)?;
            println!(
                "new signing key {kid} is current in {}; running gateways use it within a second",
                config.state_dir.join("signing-keys").display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl From<ApikeyAction> for hpcgate::cli::ApikeyCommand {
    fn from(a: ApikeyAction) -> Self {
        use hpcgate::cli::ApikeyCommand as C;
        match a {
            ApikeyAction::Create {
                user,
                name,
                groups,
                scopes,
                expires,
                json,
            } => C::Create {
                user,
                name,
                groups,
                scopes,
                expires,
                json,
            },
            ApikeyAction::List { user, json } => C::List { user, json },
            ApikeyAction::Revoke { id } => C::Revoke { id },
        }
    }
}

/// `check-config --online`: one line per target; failure if any is unreachable.
fn check_online(
    c: &config::Config,
    file: &std::path::Path,
    timeout: std::time::Duration,
) -> Result<ExitCode, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let results = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(hpcgate::process::online::check(c, timeout));
    let name = file.display().to_string();
    let mut bad = 0;
    for r in &results {
        println!("{}", r.line(&name));
        bad += usize::from(r.result.is_err());
    }
    if bad > 0 {
        eprintln!("{name}: {bad} of {} target(s) unreachable", results.len());
        return Ok(ExitCode::FAILURE);
    }
    println!("{name}: all {} target(s) reachable", results.len());
    Ok(ExitCode::SUCCESS)
}

/// The config a maintenance command works on: the one given, or the demo's.
fn load_for_cli(path: Option<PathBuf>) -> Result<config::Config, String> {
    let path = match path {
        Some(p) => p,
        None => {
            let demo = PathBuf::from(demo::DIR).join("hpcgate.toml");
            if !demo.exists() {
                return Err("give the gateway's config with --config FILE".into());
            }
            demo
        }
    };
    let config = config::load(&path).map_err(|e| format!("{}:\n{e}", path.display()))?;
    // As root, act as the user the running gateway handed its state to.
    hpcgate::process::privileges::become_state_owner(&config.state_dir)?;
    Ok(config)
}

fn serve(path: Option<PathBuf>, allow_root: bool, upgrade: bool) -> Result<ExitCode, String> {
    let (path, demo_creds) = match path {
        Some(p) => (p, None),
        None => {
            let dir = PathBuf::from(demo::DIR);
            let (p, creds) = demo::prepare(&dir)?;
            (p, Some((dir, creds)))
        }
    };
    let config = config::load(&path).map_err(|e| format!("refusing to start:\n{e}"))?;
    telemetry::init_logging(&config.logging);
    let mut extra: Vec<Box<dyn pingora::services::background::BackgroundService + Send + Sync>> =
        Vec::new();
    if demo_creds.is_some() {
        extra.push(Box::new(demo::EchoUpstream {
            socket: config.state_dir.join("echo.sock"),
        }));
        extra.push(Box::new(demo::AccountingSeed {
            db: config.database.clone(),
        }));
    }
    // The demo lives in the current directory and is for trying hpcgate out: it runs as
    // whoever started it.
    let root = if allow_root || demo_creds.is_some() {
        hpcgate::process::privileges::RootPolicy::Stay
    } else {
        hpcgate::process::privileges::RootPolicy::Switch
    };
    let opts = server::StartOptions { root, upgrade };
    server::run(config, extra, opts, move || {
        if let Some((dir, creds)) = &demo_creds {
            println!("{}", demo::banner(dir, creds));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
