//! The `client_cert` authenticator: services proven by a TLS client certificate.
//!
//! The listener (with `client_ca`) has already verified the chain; this authenticator pins
//! the leaf by its SHA-256 fingerprint, so a certificate from the same CA for somebody else
//! proves nothing. A request without a certificate, or with one not pinned here, is not
//! this authenticator's to decide.

use std::collections::BTreeMap;

use async_trait::async_trait;
use subtle::ConstantTimeEq;

use super::{Authenticator, Identity, Method, Outcome, RequestInfo};

pub struct ClientCertAuth {
    name: String,
    certificates: BTreeMap<String, [u8; 32]>,
}

impl ClientCertAuth {
    pub fn new(name: &str, certificates: BTreeMap<String, [u8; 32]>) -> Self {
        ClientCertAuth {
            name: name.to_string(),
            certificates,
        }
    }
}

#[async_trait]
impl Authenticator for ClientCertAuth {
    fn kind(&self) -> &'static str {
        "client_cert"
    }

    fn challenge(&self) -> Option<String> {
        None
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        let Some(digest) = req.client_cert_sha256 else {
            return Outcome::NotMine;
        };
        let service = self
            .certificates
            .iter()
            .find(|(_, pin)| bool::from(pin.as_slice().ct_eq(digest)))
            .map(|(s, _)| s.clone());
        match service {
            Some(s) => Outcome::Authenticated(Identity::new(
                s,
                Vec::new(),
                None,
                Method::ClientCert,
                &self.name,
            )),
            None => Outcome::NotMine,
        }
    }
}
