//! The socket under a connection: plain TCP, or TLS over it once the
//! server's INFO asked for it (or the URL or flags did).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use herald_core::nats::NatsSecurity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// TLS settings, built once.
pub struct Tls {
    /// From --nats-tls-ca / --nats-tls-cert: TLS is required everywhere.
    configured: Option<Arc<rustls::ClientConfig>>,
    /// For servers that ask for TLS without flags: the system's roots,
    /// loaded only if one does.
    system: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Tls {
    /// Reads the CA and client certificate files now, so a broken one is
    /// reported at start-up.
    pub fn load(security: &NatsSecurity) -> Result<Self, String> {
        let configured = match (&security.nats_tls_ca, &security.nats_tls_cert) {
            (None, None) => None,
            (ca, _) => {
                let mut roots = rustls::RootCertStore::empty();
                if let Some(ca) = ca {
                    for cert in herald_core::tls::read_certs(ca)? {
                        roots
                            .add(cert)
                            .map_err(|e| format!("{}: {e}", ca.display()))?;
                    }
                } else {
                    roots = system_roots();
                }
                Some(client_config(roots, security)?)
            }
        };
        Ok(Self {
            configured,
            system: OnceLock::new(),
        })
    }

    /// Whether TLS is required whatever the server says.
    pub fn required(&self) -> bool {
        self.configured.is_some()
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(config) = &self.configured {
            return Ok(config.clone());
        }
        self.system
            .get_or_init(|| client_config(system_roots(), &NatsSecurity::default()))
            .clone()
    }

    /// Upgrades `tcp` to TLS, checking the server's certificate for `host`.
    pub async fn upgrade(&self, tcp: TcpStream, host: &str) -> Result<Transport, String> {
        let config = self.config()?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Transport::Tls(Box::new(tls)))
    }
}

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

fn client_config(
    roots: rustls::RootCertStore,
    security: &NatsSecurity,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&security.nats_tls_cert, &security.nats_tls_key) {
        (Some(cert), Some(key)) => {
            let chain = herald_core::tls::read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--nats-tls-cert and --nats-tls-key go together".to_owned()),
    };
    Ok(Arc::new(config))
}

/// A connection's byte stream.
pub enum Transport {
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
