//! The edge's hyper service: what answers a connection hyper serves
//! (HTTP/2, TLS, and plain HTTP/1.1 requests other than a stream).

use std::convert::Infallible;
use std::sync::Arc;

use futures::FutureExt;
use herald_core::listener::Accepted;
use herald_core::serve::{Http, Opening};
use hyper::service::service_fn;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::http1::beats::Heartbeats;
use crate::state::State;
use crate::watch::Watch;

/// The edge's hyper service for one connection; `transport` closes it,
/// and `watch` times its writes.
pub(crate) fn service(
    state: Arc<State>,
    transport: CancellationToken,
    watch: Arc<Watch>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Send
+ 'static {
    service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let http1 = req.version() < http::Version::HTTP_2;
        let transport = http1.then(|| transport.clone());
        let heartbeats = Heartbeats::InBody {
            watch: watch.clone(),
        };
        crate::events::route(req, state.clone(), transport, heartbeats).map(Ok::<_, Infallible>)
    })
}

/// Runs a connection until it ends, or until `kill` (a slow consumer on
/// HTTP/1.1, a write timeout) drops it.
async fn until_killed(connection: impl Future<Output = ()>, kill: CancellationToken) {
    tokio::select! {
        _ = connection => {}
        _ = kill.cancelled() => tracing::debug!("connection dropped (slow consumer or write timeout)"),
    }
}

/// Serves a connection with hyper, its writes timed by the heartbeat
/// task, until it ends or `transport` (a slow consumer on HTTP/1.1, a
/// write timeout) drops it.
pub(crate) fn serve(
    http: &Http,
    accepted: Accepted,
    opening: Opening,
    state: Arc<State>,
    transport: CancellationToken,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let watch = Watch::new(transport.clone());
    state.beats.watch(&watch);
    let stall = Some(watch.stall());
    let service = service(state, transport.clone(), watch);
    let serving = http.serve_connection_noting(accepted, opening, service, stop, stall);
    until_killed(serving, transport)
}
