//! The edge's hyper service: what answers a connection hyper serves
//! (HTTP/2, TLS, and plain HTTP/1.1 requests other than a stream).

use std::convert::Infallible;
use std::sync::Arc;

use futures::FutureExt;
use hyper::service::service_fn;
use tokio_util::sync::CancellationToken;

use crate::beats::Heartbeats;
use crate::body::Body;
use crate::state::State;

/// The edge's hyper service for one connection; `transport` closes it
/// when it is HTTP/1.1.
pub fn service(
    state: Arc<State>,
    transport: CancellationToken,
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
        crate::events::route(req, state.clone(), transport, Heartbeats::InBody)
            .map(Ok::<_, Infallible>)
    })
}

/// Runs a connection until it ends, or until `kill` (a slow consumer on
/// HTTP/1.1) drops it.
pub(crate) async fn until_killed(connection: impl Future<Output = ()>, kill: CancellationToken) {
    tokio::select! {
        _ = connection => {}
        _ = kill.cancelled() => tracing::debug!("connection dropped (slow consumer)"),
    }
}
