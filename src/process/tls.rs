//! TLS for the listeners: loading certificates (as config errors, never panics), a resolver
//! that can swap certificates without a restart, and `gen-cert`'s development CA.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Reads every certificate of a PEM file; `what` names the file's role in errors.
pub fn read_pem_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// Loads a PEM chain and key, and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = read_pem_certs(cert, "certificate")?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("private key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "certificate {} and key {} do not match: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(certified)
}

/// Serves one certificate, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        CertStore {
            current: ArcSwap::new(initial),
        }
    }

    /// Swaps in a new certificate (already loaded and checked).
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Files written by [`generate_dev_certs`].
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Writes a development CA (`ca.pem`, `ca-key.pem`) and a server certificate it signed
/// (`server.pem`, `server-key.pem`) for `names` (DNS names or IP addresses) into `dir`.
/// Keys are created with mode 0600. Existing files are replaced only with `force`.
pub fn generate_dev_certs(dir: &Path, names: &[String], force: bool) -> Result<DevCerts, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let out = DevCerts {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    let ca_key_path = dir.join("ca-key.pem");
    if !force {
        for p in [
            &out.ca_cert,
            &ca_key_path,
            &out.server_cert,
            &out.server_key,
        ] {
            if p.exists() {
                return Err(format!(
                    "{} exists; use --force to replace the development certificates",
                    p.display()
                ));
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let e = |e: rcgen::Error| format!("certificate generation failed: {e}");

    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hpcgate development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(e)?;

    let server_key = KeyPair::generate().map_err(e)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(e)?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().map_or("localhost", |s| s));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Valid from yesterday (clock skew) for 397 days, within what browsers accept.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(397);
    let server = params.signed_by(&server_key, &ca).map_err(e)?;

    write_file(&out.ca_cert, ca.pem().as_bytes(), 0o644)?;
    write_file(&ca_key_path, ca.key().serialize_pem().as_bytes(), 0o600)?;
    write_file(&out.server_cert, server.pem().as_bytes(), 0o644)?;
    write_file(
        &out.server_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    Ok(out)
}

/// Writes a file with the given mode from the start (no window where a key is readable).
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Creates a directory (and its parents) for secrets: the last component is 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}
