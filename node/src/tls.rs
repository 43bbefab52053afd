//! TLS for the listeners, with rustls (ring provider):
//!
//! - the proxy and admin listeners serve `--tls-cert`/`--tls-key`;
//! - the peer listener serves the node's `--peer-cert` and requires a client certificate
//!   signed by `--peer-ca` (mutual TLS), so a process without a cluster certificate cannot
//!   join or talk Raft; the peer client presents the same certificate.
//!
//! Certificates are held behind a resolver that SIGHUP reloads: new handshakes get the new
//! certificate, established connections keep going. A reload that fails keeps the old one.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use cluster::peer::PeerTls;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{PeerTlsFiles, TlsFiles};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.display().to_string(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.display().to_string(),
            reason: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

/// Loads a certificate chain and its key.
fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(&files.cert)?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
        path: files.key.display().to_string(),
        reason: format!("not a PEM private key: {e}"),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::File {
            path: files.key.display().to_string(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::File {
        path: files.key.display().to_string(),
        reason: format!("does not match {}: {e}", files.cert.display()),
    })?;
    Ok(Arc::new(certified))
}

/// A certificate that SIGHUP can replace.
#[derive(Debug)]
pub struct ReloadableCert {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: ArcSwap::new(certified_key(files)?),
            files: files.clone(),
        }))
    }

    /// Reads the files again; on failure the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(certified_key(&self.files)?);
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A server config for the proxy or admin listener.
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A server config for the peer listener: client certificates signed by the cluster CA
/// are required.
pub fn peer_server_config(files: &PeerTlsFiles, cert: Arc<ReloadableCert>) -> Result<ServerConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(&files.ca)? {
        roots.add(ca).map_err(|e| TlsError::File {
            path: files.ca.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The peer client's material: the CA and this node's certificate and key.
pub fn peer_client(files: &PeerTlsFiles) -> Result<PeerTls, TlsError> {
    let ca_pem = read(&files.ca)?;
    certificates(&files.ca)?;
    certified_key(&files.node)?;
    let mut identity_pem = read(&files.node.cert)?;
    identity_pem.push(b'\n');
    identity_pem.extend(read(&files.node.key)?);
    Ok(PeerTls { ca_pem, identity_pem })
}
