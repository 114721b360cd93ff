//! The one way Herald serves HTTP (HTTP/1.1 and HTTP/2, or HTTP/2 only
//! for gRPC): every port accepts in [`accept_each`], and each connection
//! accepted by a [`Listener`] is driven within its bounds.
//!
//! - The TLS handshake and the first complete request head must both be
//!   done by the from-accept deadline, whatever the protocol (hyper-util's
//!   auto builder would start HTTP/1's header timer only after detecting
//!   the protocol, and never bound an HTTP/2 connection that opens no
//!   stream while its client answers pings).
//! - A connection with no request in flight for the idle timeout closes
//!   gracefully (GOAWAY on HTTP/2); HTTP/1.1 keep-alive connections are
//!   also closed by hyper's header timer between requests.
//! - Request heads over [`MAX_HEAD`] answer 431 (HTTP/1.1 and HTTP/2).
//! - A graceful close that a client stalls is cut after a grace period.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::activity::{Activity, Tracked};
use crate::conn::Conn;
use crate::listener::{Accepted, Listener, MAX_HEAD, Shared, Slot};
use crate::prefixed::Prefixed;
use crate::stall::{Stalling, WriteStall};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a connection may take to close once asked to.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a connection that missed its header deadline may take to
/// close (an HTTP/2 GOAWAY waits for a ping the client may never answer).
const LATE_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 pings find dead peers that hold streams open.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// The protocols of a listener, configured within its bounds; cheap to clone.
#[derive(Clone)]
pub struct Http(Arc<auto::Builder<TokioExecutor>>);

impl Http {
    /// HTTP/1.1 and HTTP/2 (h2c, or by ALPN under TLS).
    pub fn auto(listener: &Listener) -> Self {
        Self::build(listener, auto::Builder::new(TokioExecutor::new()))
    }

    /// HTTP/2 only, for gRPC.
    pub fn http2_only(listener: &Listener) -> Self {
        Self::build(
            listener,
            auto::Builder::new(TokioExecutor::new()).http2_only(),
        )
    }

    fn build(listener: &Listener, mut builder: auto::Builder<TokioExecutor>) -> Self {
        let bounds = listener.bounds();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(bounds.header_timeout)
            // A head that does not fit answers 431 (hyper's default buffer
            // is ~400 KB; the auto builder cannot set a head size apart).
            .max_buf_size(MAX_HEAD);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD as u32)
            .keep_alive_interval(KEEPALIVE_INTERVAL);
        Self(Arc::new(builder))
    }

    /// Serves one accepted connection with `service`, opened as `opening`
    /// says, until it ends, misses its deadline, stays idle too long, or
    /// `stop` asks it to close.
    pub fn serve_connection<S, B>(
        &self,
        accepted: Accepted,
        opening: Opening,
        service: S,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_connection_noting(accepted, opening, service, stop, None)
    }

    /// As [`Http::serve_connection`], noting in `stall` when the socket
    /// stops taking the bytes written to it (see [`crate::stall`]).
    pub fn serve_connection_noting<S, B>(
        &self,
        accepted: Accepted,
        opening: Opening,
        service: S,
        stop: CancellationToken,
        stall: Option<Arc<WriteStall>>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let builder = self.0.clone();
        async move {
            let Accepted {
                stream,
                deadline,
                slot,
            } = accepted;
            let io = match opening {
                Opening::Plain => Conn::Plain(stream),
                Opening::After(read) => Conn::Prefixed(Prefixed { read, stream }),
                Opening::Tls(tls) => {
                    match handshake(&tls, stream, deadline, slot.shared(), &stop).await {
                        Some(stream) => Conn::Tls(Box::new(stream)),
                        None => return,
                    }
                }
            };
            let io = Stalling { io, stall };
            serve_io(&builder, io, service, deadline, &slot, &stop).await;
        }
    }
}

/// How a connection's bytes begin.
pub enum Opening {
    Plain,
    /// Plain, its first bytes already read by someone else (the
    /// from-accept deadline still counts).
    After(Bytes),
    /// TLS, its handshake still to do (within the from-accept deadline).
    Tls(TlsAcceptor),
}

impl Opening {
    /// TLS when there is an acceptor, else plain.
    pub fn of(tls: Option<&TlsAcceptor>) -> Self {
        tls.map_or(Self::Plain, |tls| Self::Tls(tls.clone()))
    }
}

/// Serves `io` with `service` within the listener's bounds.
async fn serve_io<S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: Stalling<Conn>,
    service: S,
    deadline: Instant,
    slot: &Slot,
    stop: &CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Activity::default();
    let service = Tracked {
        inner: service,
        activity: activity.clone(),
    };
    // Pinned here and driven by reference: moving it into `drive`
    // would keep two copies of it in this future (+1.5 KiB a stream).
    let connection = pin!(builder.serve_connection(TokioIo::new(io), service));
    drive(connection, &activity, deadline, slot.shared(), stop).await;
}

/// The TLS handshake, within the from-accept deadline.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    deadline: Instant,
    shared: &Shared,
    stop: &CancellationToken,
) -> Option<TlsStream<TcpStream>> {
    let handshake = tokio::time::timeout_at(deadline, tls.accept(stream));
    tokio::select! {
        _ = stop.cancelled() => None,
        done = handshake => match done {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                shared.metrics.header_timeouts.inc();
                tracing::debug!("TLS handshake not done by the header deadline");
                None
            }
        },
    }
}

/// What the driver waits for besides the connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// No request head yet: the from-accept deadline.
    Header(Instant),
    /// No request in flight since then: the idle deadline.
    Idle(Instant),
    /// Closing gracefully: cut it then.
    Cut(Instant),
}

/// Runs `connection` to its end within the listener's bounds.
async fn drive<C>(
    mut connection: Pin<&mut C>,
    activity: &Activity,
    deadline: Instant,
    shared: &Shared,
    stop: &CancellationToken,
) where
    C: GracefulConnection,
    C::Error: Display,
{
    let mut seen = activity.snapshot();
    let mut idle_since = Instant::now();
    let mut cut: Option<Instant> = None;
    loop {
        let now = activity.snapshot();
        if now.changes != seen.changes {
            seen = now;
            idle_since = Instant::now();
        }
        let timer = match cut {
            Some(at) => Some(Timer::Cut(at)),
            None if now.changes == 0 => Some(Timer::Header(deadline)),
            None if now.in_flight == 0 => {
                Some(Timer::Idle(idle_since + shared.bounds.idle_timeout))
            }
            None => None,
        };
        let wake_at = match timer {
            Some(Timer::Header(at) | Timer::Idle(at) | Timer::Cut(at)) => at,
            None => Instant::now() + Duration::from_secs(86_400),
        };
        tokio::select! {
            ended = connection.as_mut() => {
                // hyper's own HTTP/1 header timer may win the race with ours.
                let late = activity.snapshot().changes == 0 && Instant::now() >= deadline;
                if late && cut.is_none() {
                    shared.metrics.header_timeouts.inc();
                }
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = activity.changed() => {}
            _ = stop.cancelled(), if cut.is_none() => {
                connection.as_mut().graceful_shutdown();
                cut = Some(Instant::now() + CLOSE_GRACE);
            }
            _ = tokio::time::sleep_until(wake_at), if timer.is_some() => {
                let grace = match timer {
                    Some(Timer::Header(_)) => {
                        shared.metrics.header_timeouts.inc();
                        LATE_GRACE
                    }
                    Some(Timer::Idle(_)) => {
                        shared.metrics.idle_closes.inc();
                        CLOSE_GRACE
                    }
                    _ => {
                        tracing::debug!("connection cut: it did not close in time");
                        return;
                    }
                };
                connection.as_mut().graceful_shutdown();
                cut = Some(Instant::now() + grace);
            }
        }
    }
}

/// Serves every connection on `listener` with a fresh `service()` until
/// `shutdown`; then stops accepting, asks every connection to close, and
/// returns once they are closed (in-flight requests finish first, within
/// [`CLOSE_GRACE`]).
pub async fn serve<F, S, B>(
    listener: Listener,
    http: Http,
    tls: Option<TlsAcceptor>,
    service: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn() -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stop = CancellationToken::new();
    let accept = |accepted| {
        let opening = Opening::of(tls.as_ref());
        tokio::spawn(http.serve_connection(accepted, opening, service(), stop.clone()));
    };
    tokio::select! {
        _ = shutdown => {}
        never = accept_each(&listener, accept) => match never {},
    }
    close(listener, &stop).await;
}

/// Hands every connection `listener` admits to `accept`, for as long as
/// it is polled: the one accept loop of every port (the listener backs
/// off by itself when accepting fails).
pub async fn accept_each(listener: &Listener, accept: impl Fn(Accepted)) -> Infallible {
    loop {
        accept(listener.accept().await);
    }
}

/// Stops accepting on `listener`, asks its connections to close by
/// cancelling `stop` (the token they were served with), and waits until
/// they are closed: at most [`CLOSE_GRACE`] and a second, the longest a
/// connection takes once asked.
pub async fn close(listener: Listener, stop: &CancellationToken) {
    let sockets = listener.sockets();
    drop(listener); // the kernel stops completing handshakes for us
    stop.cancel();
    let closed = tokio::time::timeout(CLOSE_GRACE + LATE_GRACE, sockets.closed()).await;
    if closed.is_err() {
        tracing::warn!(
            open = sockets.open(),
            "some connections did not close in time"
        );
    }
}
