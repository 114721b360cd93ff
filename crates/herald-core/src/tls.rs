//! TLS for Herald's own listeners: certificate and key from PEM files,
//! optionally client certificates checked against a CA (mutual TLS), and
//! the files re-read when they change, so a renewed certificate (e.g. by
//! cert-manager) is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use herald_nats::pem::{PemError, read_certs};

use crate::config_error::ConfigError;

/// How often certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// TLS flags; without `--tls-cert` the port speaks plain TCP.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve TLS with (with --tls-key); re-read
    /// when the file changes.
    #[arg(long, env = "HERALD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "HERALD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: clients must present a certificate one of them
    /// signed (mutual TLS).
    #[arg(long, env = "HERALD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Serves the current certificate and swaps in a new one when its files
/// change.
#[derive(Debug)]
pub struct Reloader {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

impl ResolvesServerCert for Reloader {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().0.clone())
    }
}

impl Reloader {
    /// Reads the certificate and key now.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PemError> {
        let certified = certified_key(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new((Arc::new(certified), modified(cert, key))),
        })
    }

    /// Re-reads the files if they changed since the last read; a broken
    /// pair (e.g. caught half-written) keeps the old certificate.
    pub fn reload_if_changed(&self) {
        let stamp = modified(&self.cert, &self.key);
        if stamp == self.current.read().unwrap().1 {
            return;
        }
        match certified_key(&self.cert, &self.key) {
            Ok(certified) => {
                *self.current.write().unwrap() = (Arc::new(certified), stamp);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded; serving the old one")
            }
        }
    }

    /// Checks for changes every [`RELOAD_CHECK`] until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(RELOAD_CHECK);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => self.reload_if_changed(),
            }
        }
    }
}

/// A listener's TLS: its configuration and the certificate reloader.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub reloader: Arc<Reloader>,
}

impl ServerTls {
    /// The acceptor for the listener; certificate files are watched for
    /// changes until `stop`.
    pub fn start(&self, stop: CancellationToken) -> tokio_rustls::TlsAcceptor {
        tokio::spawn(self.reloader.clone().watch(stop));
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

impl TlsArgs {
    /// The TLS of a listener offering `alpn` protocols (e.g. `h2`,
    /// `http/1.1`); `None` without `--tls-cert`. Errors name the flag at
    /// fault.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Option<ServerTls>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let reloader = Reloader::load(cert, key).map_err(ConfigError::of("--tls-cert"))?;
        let reloader = Arc::new(reloader);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ConfigError::of("--tls-cert"))?;
        let builder = match &self.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier =
                    client_verifier(ca, provider).map_err(ConfigError::of("--tls-client-ca"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(reloader.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Some(ServerTls {
            config: Arc::new(config),
            reloader,
        }))
    }
}

/// Checks client certificates against the CAs in `ca` (mutual TLS).
fn client_verifier(
    ca: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ClientCaError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build()?;
    Ok(verifier)
}

/// Why `--tls-client-ca` cannot be used.
#[derive(Debug, thiserror::Error)]
enum ClientCaError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{0}")]
    Cert(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, PemError> {
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| PemError::Key {
        path: key.to_owned(),
        error,
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(PemError::UnusableKey)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|error| PemError::Mismatch {
        path: cert.to_owned(),
        error,
    })?;
    Ok(certified)
}

/// The later modification time of the two files.
fn modified(cert: &Path, key: &Path) -> Option<SystemTime> {
    let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    time(cert).max(time(key))
}
