//! PEM files for TLS: the certificates one holds, and why a certificate
//! or key cannot be used. TLS to NATS (herald-subscriptions, the CLI) and
//! Herald's own listeners (herald-core's `tls`) read them alike. A leaf
//! module.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject};

/// Why a certificate or key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read certificates from {}: {error}", path.display())]
    Certs { path: PathBuf, error: pem::Error },
    #[error("no certificate in {}", path.display())]
    NoCert { path: PathBuf },
    #[error("cannot read a private key from {}: {error}", path.display())]
    Key { path: PathBuf, error: pem::Error },
    #[error("unusable private key: {0}")]
    UnusableKey(rustls::Error),
    #[error("{} does not match its key: {error}", path.display())]
    Mismatch { path: PathBuf, error: rustls::Error },
}

/// Every certificate in a PEM file; none is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| PemError::Certs {
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCert {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}
