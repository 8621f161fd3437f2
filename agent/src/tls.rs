//! The rustls client configuration: Mozilla's roots (webpki-roots, compiled
//! in) plus every certificate of an optional `--ca-file`, on the ring provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why the TLS client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {path} holds no PEM certificate")]
    NoCertificates { path: PathBuf },
    #[error("CA file {path}: certificate #{index} is not a usable trust anchor: {source}")]
    BadCertificate {
        path: PathBuf,
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("configuring TLS: {0}")]
    Config(#[source] rustls::Error),
}

/// A client config trusting the public web PKI and, if given, the CAs in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let added = add_ca_file(&mut roots, path)?;
        tracing::debug!(path = %path.display(), added, "trusting extra CA certificates");
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Add every `CERTIFICATE` block of the PEM file at `path`; returns how many.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, TlsError> {
    let ca_err = |source| TlsError::CaFile {
        path: path.to_owned(),
        source,
    };
    let mut added = 0;
    for (index, cert) in CertificateDer::pem_file_iter(path)
        .map_err(ca_err)?
        .enumerate()
    {
        let cert = cert.map_err(ca_err)?;
        roots.add(cert).map_err(|source| TlsError::BadCertificate {
            path: path.to_owned(),
            index,
            source,
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_file(tag: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "crops-agent-tls-{tag}-{}-{}.pem",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn builds_with_the_compiled_in_roots() {
        client_config(None).unwrap();
    }

    #[test]
    fn a_missing_ca_file_is_a_clear_error() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(err, TlsError::CaFile { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = scratch_file("empty", "just text\n");
        let err = client_config(Some(&path)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, TlsError::NoCertificates { .. }), "{err}");
    }

    #[test]
    fn a_garbage_certificate_is_refused() {
        let path = scratch_file(
            "garbage",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let err = client_config(Some(&path)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(err, TlsError::BadCertificate { index: 0, .. }),
            "{err}"
        );
    }
}
