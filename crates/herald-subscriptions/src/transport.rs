//! The socket under a connection: plain TCP, or TLS over it once the
//! server's INFO asked for it (or the URL or flags did).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use herald_nats::connection::NatsSecurity;
use herald_nats::pem::{PemError, read_certs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{InvalidDnsNameError, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Why TLS could not be set up, or started on a connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{}: {error}", path.display())]
    Unusable { path: PathBuf, error: rustls::Error },
    #[error("--nats-tls-cert and --nats-tls-key go together")]
    HalfIdentity,
    #[error("{0}")]
    Setup(#[from] rustls::Error),
    #[error("{0}")]
    ServerName(#[from] InvalidDnsNameError),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("the server does not offer TLS")]
    NotOffered,
    #[error("TLS started twice")]
    StartedTwice,
}

/// TLS settings, built once.
pub(crate) struct Tls {
    /// From --nats-tls-ca / --nats-tls-cert: TLS is required everywhere.
    configured: Option<Arc<rustls::ClientConfig>>,
    /// For servers that ask for TLS without flags: the system's roots,
    /// loaded only if one does.
    system: OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>>,
}

impl Tls {
    /// Reads the CA and client certificate files now, so a broken one is
    /// reported at start-up.
    pub(crate) fn load(security: &NatsSecurity) -> Result<Self, TlsError> {
        let configured = match (&security.nats_tls_ca, &security.nats_tls_cert) {
            (None, None) => None,
            (ca, _) => {
                let roots = match ca {
                    Some(ca) => roots_in(ca)?,
                    None => system_roots(),
                };
                Some(client_config(roots, security)?)
            }
        };
        Ok(Self {
            configured,
            system: OnceLock::new(),
        })
    }

    /// Whether TLS is required whatever the server says.
    pub(crate) fn required(&self) -> bool {
        self.configured.is_some()
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        if let Some(config) = &self.configured {
            return Ok(config.clone());
        }
        let system = self.system.get_or_init(|| {
            let config = builder(system_roots())?.with_no_client_auth();
            Ok(Arc::new(config))
        });
        Ok(system.clone()?)
    }

    /// Upgrades `tcp` to TLS, checking the server's certificate for `host`.
    pub(crate) async fn upgrade(&self, tcp: TcpStream, host: &str) -> Result<Transport, TlsError> {
        let config = self.config()?;
        let name = ServerName::try_from(host.to_owned())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(TlsError::Handshake)?;
        Ok(Transport::Tls(Box::new(tls)))
    }
}

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

/// The CA certificates in the PEM file `ca`.
fn roots_in(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert).map_err(|error| TlsError::Unusable {
            path: ca.to_owned(),
            error,
        })?;
    }
    Ok(roots)
}

fn builder(
    roots: rustls::RootCertStore,
) -> Result<
    rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    rustls::Error,
> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots))
}

fn client_config(
    roots: rustls::RootCertStore,
    security: &NatsSecurity,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = builder(roots)?;
    let config = match (&security.nats_tls_cert, &security.nats_tls_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|error| PemError::Key {
                path: key.to_owned(),
                error,
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| TlsError::Unusable {
                    path: cert.to_owned(),
                    error,
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfIdentity),
    };
    Ok(Arc::new(config))
}

/// A connection's byte stream.
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
