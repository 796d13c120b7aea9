//! One OpenID Connect provider as the gateway knows it: its discovery document, its signing
//! keys, and the HTTP clients that talk to it.
//!
//! Discovery runs on a thread of its own (with a one-thread runtime) from the moment the
//! authenticator is built, so the gateway starts whether or not the IdP answers. Until the
//! first discovery succeeds, [`Provider::current`] is `None` and every request that needs the
//! IdP gets 503 (fail closed). The thread retries with backoff (1 s, doubling, at most
//! `discovery_retry`), fetches the keys again every hour, and on demand when a token names a
//! key it does not know — at most once per `jwks_refresh_interval`, however many such tokens
//! arrive. A failed refresh keeps the keys it had. The thread ends with the provider.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::{IssuerUrl, ProviderMetadataWithLogout};
use tokio::sync::{Notify, watch};

/// Keys are fetched again this often even when no token asks for it, so keys the IdP
/// retired stop being trusted.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Requests can wake a discovery attempt, but never more often than this.
const MIN_ATTEMPT_GAP: Duration = Duration::from_secs(1);
/// The largest discovery document or key set read from an IdP. Real ones are a few KiB; a
/// bigger answer (a broken or hostile IdP: tests/faults.rs serves 50 MB, 100 000 keys) is
/// refused instead of being held in memory and turned into keys checked on every token.
pub const MAX_IDP_BODY: usize = 1 << 20;

/// How to reach one IdP.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub issuer: IssuerUrl,
    /// PEM CA bundle for an https IdP (default: the built-in web roots).
    pub tls_ca: Option<PathBuf>,
    /// Per HTTP request to the IdP.
    pub timeout: Duration,
    /// Longest wait between discovery attempts while the IdP cannot be reached.
    pub discovery_retry: Duration,
    /// At most one key refresh per this interval for tokens naming an unknown key.
    pub jwks_refresh_interval: Duration,
}

/// One signing key, ready for `jsonwebtoken`.
pub struct Key {
    pub kid: Option<String>,
    /// The key's own `alg`, if the IdP published one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// What discovery found, as of one fetch of the keys.
pub struct Discovered {
    pub metadata: Arc<ProviderMetadataWithLogout>,
    /// The same keys as `metadata.jwks()`, for bearer tokens. Never symmetric (`oct`) keys,
    /// never keys published for encryption only.
    pub keys: Arc<Vec<Key>>,
    /// When the keys were last fetched or tried: the refresh limit counts from here.
    pub checked: Instant,
    /// The last refresh failed; `keys` are from before it.
    pub refresh_failed: bool,
}

impl Discovered {
    fn new(metadata: ProviderMetadataWithLogout) -> Discovered {
        Discovered {
            keys: Arc::new(bearer_keys(metadata.jwks())),
            metadata: Arc::new(metadata),
            checked: Instant::now(),
            refresh_failed: false,
        }
    }

    /// Keys that may have signed a token with this `kid` and `alg`.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| {
            (kid.is_none() || k.kid.as_deref() == kid)
                && k.key.family() == alg.family()
                && k.alg.is_none_or(|a| a == alg)
        })
    }
}

/// The asymmetric signature keys of a JWKS, for `jsonwebtoken`. Keys it cannot use are
/// skipped, not fatal: an IdP may publish encryption keys or algorithms we do not know.
fn bearer_keys(jwks: &CoreJsonWebKeySet) -> Vec<Key> {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    jwks.keys()
        .iter()
        .filter_map(|k| {
            let jwk: Jwk = serde_json::from_value(serde_json::to_value(k).ok()?).ok()?;
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
                || matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature)
            {
                return None;
            }
            let alg = match &jwk.common.key_algorithm {
                None => None,
                Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
            };
            Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key: DecodingKey::from_jwk(&jwk).ok()?,
            })
        })
        .collect()
}

struct Shared {
    name: String,
    cfg: ProviderConfig,
    state: watch::Sender<Option<Arc<Discovered>>>,
    wake: Notify,
    stop: AtomicBool,
    /// For calls made while serving a request (code exchange, refresh), on the proxy's
    /// runtime. The discovery thread has a client of its own.
    http: reqwest::Client,
}

/// An IdP and its keys, kept fresh by a background thread.
pub struct Provider {
    shared: Arc<Shared>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

/// An HTTP client for the IdP: never follows redirects (discovery must not be steered
/// elsewhere), with the configured CA and timeout.
pub fn http_client(cfg: &ProviderConfig) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .user_agent(concat!("hpcgate/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &cfg.tls_ca {
        b = b.tls_built_in_root_certs(false);
        for c in crate::process::tls::read_pem_certs(path, "IdP CA file")? {
            let cert = reqwest::Certificate::from_der(c.as_ref())
                .map_err(|e| format!("IdP CA file {}: {e}", path.display()))?;
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .map_err(|e| format!("cannot build an HTTP client for the IdP: {e}"))
}

/// One request to the IdP through `http`, its body read up to [`MAX_IDP_BODY`]: what
/// discovery and key fetches use instead of the unbounded `reqwest::Client` client.
async fn capped_call(
    http: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, openidconnect::HttpClientError<reqwest::Error>> {
    use openidconnect::HttpClientError;
    let too_big =
        || HttpClientError::Other(format!("the answer is larger than {MAX_IDP_BODY} bytes"));
    let mut response = http
        .execute(request.try_into().map_err(Box::new)?)
        .await
        .map_err(Box::new)?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_IDP_BODY as u64)
    {
        return Err(too_big());
    }
    let mut builder = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Box::new)? {
        if body.len() + chunk.len() > MAX_IDP_BODY {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    builder.body(body).map_err(HttpClientError::Http)
}

impl Provider {
    /// Starts discovering `cfg.issuer` in the background. `name` is the authenticator's, for
    /// logs.
    pub fn start(name: &str, cfg: ProviderConfig) -> Result<Provider, String> {
        let (state, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            name: name.to_string(),
            http: http_client(&cfg)?,
            cfg,
            state,
            wake: Notify::new(),
            stop: AtomicBool::new(false),
        });
        let background = http_client(&shared.cfg)?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name(format!("oidc-{name}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(keep_fresh(s, background)),
                    Err(e) => tracing::error!(
                        authenticator = %s.name,
                        error = %e,
                        "cannot start the OpenID Connect discovery runtime; requests get 503"
                    ),
                }
            })
            .map_err(|e| format!("cannot start the OpenID Connect discovery thread: {e}"))?;
        Ok(Provider { shared })
    }

    pub fn issuer(&self) -> &IssuerUrl {
        &self.shared.cfg.issuer
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.shared.http
    }

    /// What is known now; `None` until discovery succeeded (and then a nudge to try again).
    pub fn current(&self) -> Option<Arc<Discovered>> {
        let current = self.shared.state.borrow().clone();
        if current.is_none() {
            self.shared.wake.notify_one();
        }
        current
    }

    /// Keys fetched after `seen`, for a token signed by a key `seen` does not have. `None`
    /// when `seen` is younger than the refresh interval (no fetch is made) or the fetch did
    /// not finish in time.
    pub async fn refreshed(&self, seen: &Discovered) -> Option<Arc<Discovered>> {
        if seen.checked.elapsed() < self.shared.cfg.jwks_refresh_interval {
            return None;
        }
        let mut rx = self.shared.state.subscribe();
        self.shared.wake.notify_one();
        let newer = rx.wait_for(|s| s.as_ref().is_some_and(|d| d.checked > seen.checked));
        match tokio::time::timeout(self.shared.cfg.timeout * 2, newer).await {
            Ok(Ok(found)) => found.clone(),
            _ => None,
        }
    }
}

fn stopped(s: &Shared) -> bool {
    s.stop.load(Ordering::Relaxed)
}

/// The discovery thread: discover until it works, then keep the keys fresh.
async fn keep_fresh(s: Arc<Shared>, client: reqwest::Client) {
    let http = |request| capped_call(&client, request);
    let issuer = s.cfg.issuer.as_str().to_string();
    let mut wait = Duration::from_secs(1);
    let first = loop {
        if stopped(&s) {
            return;
        }
        let attempt = Instant::now();
        match ProviderMetadataWithLogout::discover_async(s.cfg.issuer.clone(), &http).await {
            Ok(m) => break m,
            Err(e) => tracing::warn!(
                authenticator = %s.name,
                issuer = %issuer,
                error = %error_chain(&e),
                retry_in_s = wait.as_secs(),
                "cannot discover the identity provider; its routes answer 503 until it can be"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = s.wake.notified() => {
                tokio::time::sleep_until((attempt + MIN_ATTEMPT_GAP).into()).await;
            }
        }
        wait = (wait * 2).min(s.cfg.discovery_retry.max(MIN_ATTEMPT_GAP));
    };
    let first = Discovered::new(first);
    tracing::info!(
        authenticator = %s.name,
        issuer = %issuer,
        keys = first.keys.len(),
        "identity provider discovered"
    );
    s.state.send_replace(Some(Arc::new(first)));
    loop {
        let Some(current) = s.state.borrow().clone() else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until((current.checked + KEYS_MAX_AGE).into()) => {}
            _ = s.wake.notified() => {
                if current.checked.elapsed() < s.cfg.jwks_refresh_interval {
                    continue;
                }
            }
        }
        if stopped(&s) {
            return;
        }
        let next =
            match openidconnect::JsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &http)
                .await
            {
                Ok(jwks) => {
                    let metadata = (*current.metadata).clone().set_jwks(jwks);
                    let next = Discovered::new(metadata);
                    tracing::info!(
                        authenticator = %s.name,
                        keys = next.keys.len(),
                        "identity provider keys fetched"
                    );
                    next
                }
                Err(e) => {
                    tracing::warn!(
                        authenticator = %s.name,
                        issuer = %issuer,
                        error = %error_chain(&e),
                        "cannot fetch the identity provider's keys; keeping the ones known"
                    );
                    Discovered {
                        metadata: current.metadata.clone(),
                        keys: current.keys.clone(),
                        checked: Instant::now(),
                        refresh_failed: true,
                    }
                }
            };
        s.state.send_replace(Some(Arc::new(next)));
    }
}

/// An error and its causes on one line. The openidconnect errors used here carry no token
/// or response body in their messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering every request with `len` bytes of JSON-ish body, with a
    /// Content-Length or chunked (then the size is only known while reading).
    async fn serve(len: usize, chunked: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = vec![b' '; len];
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
                } else {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n")
                };
                let _ = s.write_all(head.as_bytes()).await;
                if chunked {
                    for part in body.chunks(64 << 10) {
                        let _ = s
                            .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                            .await;
                        let _ = s.write_all(part).await;
                        let _ = s.write_all(b"\r\n").await;
                    }
                    let _ = s.write_all(b"0\r\n\r\n").await;
                } else {
                    let _ = s.write_all(&body).await;
                }
            }
        });
        format!("http://{addr}/jwks")
    }

    #[tokio::test]
    async fn idp_answers_over_the_cap_are_refused() {
        let http = reqwest::Client::new();
        let get = |url: String| {
            let http = http.clone();
            async move {
                let req = http::Request::get(url).body(Vec::new()).unwrap();
                capped_call(&http, req).await
            }
        };
        let small = get(serve(4096, false).await).await.unwrap();
        assert_eq!(small.body().len(), 4096);
        let small = get(serve(4096, true).await).await.unwrap();
        assert_eq!(small.body().len(), 4096);
        for chunked in [false, true] {
            let e = get(serve(MAX_IDP_BODY + 1, chunked).await)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("larger than"), "{e}");
        }
    }
}
