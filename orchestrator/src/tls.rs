//! TLS for the listener (server side) and for the admin CLI (client side),
//! with rustls and its ring provider chosen explicitly.
//!
//! The server loads a PEM certificate chain and private key; when given, every
//! accepted TCP connection is wrapped in TLS before hyper sees it, so the API
//! and the agent WebSocket share one port either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain from {path}: {source}")]
    Certs {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate found in {path}")]
    NoCerts { path: PathBuf },
    #[error("cannot read private key from {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot use certificate {cert} with key {key}: {source}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot add a CA certificate from {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build a TLS client configuration: {0}")]
    Client(#[source] rustls::Error),
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// SHA-256 (hex) of the leaf certificate of the PEM chain at `cert`: what
/// `worker.accepted` tells agents, to detect a middlebox that re-signs.
pub fn leaf_sha256(cert: &Path) -> Result<String, TlsError> {
    let chain = load_certs(cert)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, chain[0].as_ref());
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// A TLS acceptor for the listener, from a PEM chain and a PEM key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<futures_rustls::TlsAcceptor, TlsError> {
    let chain = load_certs(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let config_error = |source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(futures_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A TLS connector for the admin CLI: the webpki roots, plus `ca_file` if given.
pub fn connector(ca_file: Option<&Path>) -> Result<futures_rustls::TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|source| TlsError::Ca {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Client)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(futures_rustls::TlsConnector::from(Arc::new(config)))
}
