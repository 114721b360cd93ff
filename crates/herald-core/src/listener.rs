//! Bounded listeners: the one accept every port uses, with back-off when
//! accepting fails (e.g. out of file descriptors), a cap on open
//! sockets (excess ones are closed at once), and the from-accept deadline
//! by which a connection must have sent a complete request head.
//!
//! The `serve` module drives each accepted connection within these bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use herald_nats::duration::parse_duration;

use crate::backoff;
use crate::config_error::ConfigError;

/// Largest request head (request line and headers) any listener reads;
/// beyond it, 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// Most sockets on an admin port: scrapes and probes need a handful.
pub const ADMIN_MAX_SOCKETS: usize = 128;

/// File descriptors kept free of client sockets, at least: NATS, the
/// admin port, TLS certificate reads, logs.
const RESERVED_FDS: u64 = 256;

/// How every listener of a service is bounded (flags shared by all services).
#[derive(Debug, Clone, clap::Args)]
pub struct ListenerArgs {
    /// A connection must send a complete request head within this time from
    /// accept (TLS handshake included), whatever the protocol; an idle
    /// HTTP/1.1 keep-alive connection is closed after it too.
    #[arg(long, env = "HERALD_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// An HTTP/2 connection with no open stream is closed (GOAWAY) after this.
    #[arg(long, env = "HERALD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Most open TCP connections on the main port; more are closed at once.
    /// Default: 90% of the open-file limit (`ulimit -n`), keeping at least
    /// 256 descriptors for everything else.
    #[arg(long, env = "HERALD_MAX_SOCKETS")]
    pub max_sockets: Option<usize>,
}

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// From accept to a complete first request head.
    pub header_timeout: Duration,
    /// From the last request's end to closing the connection.
    pub idle_timeout: Duration,
    /// Most open sockets.
    pub max_sockets: usize,
}

impl Default for Bounds {
    /// The flags' defaults, with the socket cap derived from the current
    /// open-file limit.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_sockets: sockets_within(fd_limit()),
        }
    }
}

impl ListenerArgs {
    /// The main port's bounds, checked against the open-file limit.
    pub fn bounds(&self) -> Result<Bounds, ConfigError> {
        let limit = fd_limit();
        let fit = sockets_within(limit);
        let max_sockets = match self.max_sockets {
            None => fit,
            Some(0) => return Err(ConfigError::new("--max-sockets", "must be at least 1")),
            Some(n) if n > fit => {
                return Err(ConfigError::new(
                    "--max-sockets",
                    format!(
                        "{n} sockets do not fit in the open-file limit of {limit} (`ulimit -n`) \
                         with room for the rest; use at most {fit} or raise the limit"
                    ),
                ));
            }
            Some(n) => n,
        };
        Ok(Bounds {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_sockets,
        })
    }
}

/// Client sockets that fit in `limit` file descriptors.
fn sockets_within(limit: u64) -> usize {
    let reserved = (limit / 10).max(RESERVED_FDS);
    usize::try_from(limit.saturating_sub(reserved).max(1)).unwrap_or(usize::MAX)
}

/// The soft open-file limit; effectively unlimited when it cannot be read.
pub fn fd_limit() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current.unwrap_or(u64::MAX)
}

/// Raises the soft open-file limit to the hard one (as the Go runtime
/// does), so a default `ulimit -n` of 1,024 does not cap the edge; returns
/// the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    fd_limit()
}

/// A listener's socket metrics; register them under the service's prefix.
#[derive(Debug, Clone, Default)]
pub struct SocketMetrics {
    pub open: Gauge,
    pub refused: Counter,
    pub header_timeouts: Counter,
    pub idle_closes: Counter,
}

impl SocketMetrics {
    /// Registers the metrics in `registry` (already prefixed, e.g. `herald_edge`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("sockets_open", "Open TCP connections", m.open.clone());
        registry.register(
            "sockets_refused",
            "TCP connections closed at accept because --max-sockets were open",
            m.refused.clone(),
        );
        registry.register(
            "header_timeouts",
            "Connections closed for not sending a request head within --header-timeout of accept",
            m.header_timeouts.clone(),
        );
        registry.register(
            "idle_closes",
            "Connections closed after --idle-timeout with no request in flight",
            m.idle_closes.clone(),
        );
        m
    }
}

/// What a listener's accepted connections share: its bounds, the count of
/// its open sockets and its metrics.
#[derive(Debug)]
pub struct Shared {
    pub bounds: Bounds,
    pub metrics: SocketMetrics,
    open: AtomicUsize,
}

/// A TCP listener with its bounds.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    shared: Arc<Shared>,
}

impl From<TcpListener> for Listener {
    /// Default bounds, for tests and embedding.
    fn from(tcp: TcpListener) -> Self {
        Self::new(tcp, Bounds::default())
    }
}

impl Listener {
    pub fn new(tcp: TcpListener, bounds: Bounds) -> Self {
        Self::with_metrics(tcp, bounds, SocketMetrics::default())
    }

    /// A listener counting in `metrics`.
    pub fn with_metrics(tcp: TcpListener, bounds: Bounds, metrics: SocketMetrics) -> Self {
        let shared = Shared {
            bounds,
            metrics,
            open: AtomicUsize::new(0),
        };
        Self {
            tcp,
            shared: Arc::new(shared),
        }
    }

    /// The same socket and bounds, counting in `metrics`; call before accepting.
    pub fn counting_in(self, metrics: SocketMetrics) -> Self {
        Self::with_metrics(self.tcp, self.shared.bounds, metrics)
    }

    pub fn bounds(&self) -> Bounds {
        self.shared.bounds
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    /// Counts this listener's open sockets; outlives the listener.
    pub fn sockets(&self) -> Sockets {
        Sockets(self.shared.clone())
    }

    /// The next connection within the socket cap. Excess connections are
    /// closed at once; failures (e.g. out of file descriptors) are retried
    /// with back-off (see [`crate::backoff`]).
    pub async fn accept(&self) -> Accepted {
        loop {
            let (stream, _) = backoff::accept(|| self.tcp.accept()).await;
            if let Some(accepted) = self.admit(stream) {
                return accepted;
            }
        }
    }

    fn admit(&self, stream: TcpStream) -> Option<Accepted> {
        let shared = &self.shared;
        let admitted = shared
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < shared.bounds.max_sockets).then_some(open + 1)
            });
        if admitted.is_err() {
            shared.metrics.refused.inc();
            return None; // dropping `stream` closes it
        }
        shared.metrics.open.inc();
        let _ = stream.set_nodelay(true);
        Some(Accepted {
            stream,
            deadline: Instant::now() + shared.bounds.header_timeout,
            slot: Slot(shared.clone()),
        })
    }
}

/// A connection admitted by [`Listener::accept`].
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    /// By when the first request head must be complete.
    pub deadline: Instant,
    /// Counts the socket as open until dropped.
    pub slot: Slot,
}

/// One open socket of a listener; dropped with the socket.
#[derive(Debug)]
pub struct Slot(Arc<Shared>);

impl Slot {
    pub fn shared(&self) -> &Shared {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.open.dec();
    }
}

/// The open sockets of a listener, even after it is dropped.
#[derive(Debug, Clone)]
pub struct Sockets(Arc<Shared>);

impl Sockets {
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// Returns once every socket is closed.
    pub async fn closed(&self) {
        while self.open() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio::io::AsyncReadExt;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        listener: ListenerArgs,
    }

    fn bounds(args: &[&str]) -> Result<Bounds, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
        cli.listener.bounds()
    }

    #[test]
    fn sockets_leave_room_for_everything_else() {
        assert_eq!(sockets_within(20_000), 18_000);
        assert_eq!(sockets_within(1_024), 768);
        assert_eq!(sockets_within(100), 1);
        assert_eq!(sockets_within(1_048_576), 943_719);
    }

    #[test]
    fn flags_are_checked_against_the_fd_limit() {
        let fit = sockets_within(fd_limit());
        assert_eq!(bounds(&[]).unwrap().max_sockets, fit);
        assert_eq!(bounds(&["--max-sockets", "7"]).unwrap().max_sockets, 7);
        assert_eq!(
            bounds(&["--max-sockets", "0"]).unwrap_err().flag,
            "--max-sockets"
        );
        if fit < usize::MAX {
            let too_many = (fit + 1).to_string();
            let ConfigError { flag, problem } = bounds(&["--max-sockets", &too_many]).unwrap_err();
            assert_eq!(flag, "--max-sockets");
            assert!(problem.contains("ulimit -n"), "{problem}");
        }
        let b = bounds(&["--header-timeout", "2s", "--idle-timeout", "500ms"]).unwrap();
        assert_eq!(b.header_timeout, Duration::from_secs(2));
        assert_eq!(b.idle_timeout, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["x", "--header-timeout", "0s"]).is_err());
        assert!(Cli::try_parse_from(["x", "--max-sockets", "-3"]).is_err());
    }

    #[tokio::test]
    async fn excess_sockets_are_closed_at_once_and_counted() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let bounds = Bounds {
            max_sockets: 2,
            ..Bounds::default()
        };
        let listener = Listener::new(tcp, bounds);
        let sockets = listener.sockets();
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let first = listener.accept().await;
        let second = listener.accept().await;
        assert_eq!(sockets.open(), 2);

        let mut excess = TcpStream::connect(addr).await.unwrap();
        let accepting = tokio::spawn(async move {
            let third = listener.accept().await;
            (listener, third)
        });
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), excess.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "excess socket closed");
        assert_eq!(sockets.open(), 2);

        drop(first);
        let _c = TcpStream::connect(addr).await.unwrap();
        let (listener, third) = accepting.await.unwrap();
        assert_eq!(sockets.open(), 2);
        assert_eq!(listener.shared.metrics.refused.get(), 1);
        drop((second, third));
        assert_eq!(sockets.open(), 0);
        assert_eq!(listener.shared.metrics.open.get(), 0);
    }
}
