//! What a connection is doing, as its driver needs to know: has a request
//! head arrived yet, and how many requests are in flight (an HTTP/2
//! connection carries many; a long SSE body counts until it ends).
//!
//! A leaf module: [`Tracked`] wraps a hyper service so each request holds a
//! guard from the moment its head is complete until its response body is
//! dropped (sent, or reset by the client).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// One connection's requests; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Activity(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    in_flight: AtomicUsize,
    /// Requests started and ended: changes whenever anything happens.
    changes: AtomicU64,
    /// Wakes the connection's driver (its only waiter).
    changed: Notify,
}

/// A snapshot of a connection's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub in_flight: usize,
    /// Differs between two snapshots when a request started or ended
    /// between them; zero until the first request head arrived.
    pub changes: u64,
}

impl Activity {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            in_flight: self.0.in_flight.load(Ordering::Acquire),
            changes: self.0.changes.load(Ordering::Acquire),
        }
    }

    /// Resolves after the next change (or at once if one happened since
    /// the last call returned).
    pub async fn changed(&self) {
        self.0.changed.notified().await
    }

    /// Marks a request in flight until the guard drops.
    pub fn start(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        self.0.changes.fetch_add(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A request in flight.
#[derive(Debug)]
pub struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// A hyper service whose requests count in an [`Activity`].
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    pub inner: S,
    pub activity: Activity,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req, B> hyper::service::Service<Request<Req>> for Tracked<S>
where
    S: hyper::service::Service<Request<Req>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Send,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    // Boxed: hyper keeps the space of a service future for the
    // connection's whole life, and a box is freed once the response head
    // is out.
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn call(&self, req: Request<Req>) -> Self::Future {
        let guard = self.activity.start();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request in flight until dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _guard: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::Service;
    use std::convert::Infallible;

    #[tokio::test]
    async fn a_request_counts_until_its_body_is_dropped() {
        let activity = Activity::default();
        assert_eq!(activity.snapshot().changes, 0);
        let service = Tracked {
            inner: hyper::service::service_fn(|_req: Request<Empty<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
            }),
            activity: activity.clone(),
        };
        let response = service.call(Request::new(Empty::new())).await.unwrap();
        let started = activity.snapshot();
        assert_eq!(started.in_flight, 1);
        activity.changed().await; // the start notified
        let body = response.into_body();
        assert!(!body.is_end_stream());
        drop(body);
        activity.changed().await;
        let ended = activity.snapshot();
        assert_eq!(ended.in_flight, 0);
        assert_ne!(ended.changes, started.changes);
    }

    #[tokio::test]
    async fn the_body_is_passed_through() {
        let activity = Activity::default();
        let body = TrackedBody {
            inner: Full::new(Bytes::from_static(b"payload")),
            _guard: activity.start(),
        };
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"payload");
        assert_eq!(activity.snapshot().in_flight, 0);
    }
}
