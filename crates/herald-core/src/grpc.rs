//! The one way Herald serves a gRPC service (herald-publish's Publisher,
//! herald-presence's Presence): health checking (`grpc.health.v1`) and
//! server reflection beside it, TLS with certificate reload, readiness
//! once the service is warm, and a graceful stop, every connection within
//! the listener's bounds (see [`crate::serve`]). Health is the service's
//! [`Readiness`], as `/readyz` shows it: a load balancer asking either
//! hears the same answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::listener::Listener;
use crate::readiness::{Readiness, State};
use crate::reflection::with_reflection;
use crate::serve::{self, Http};
use crate::tls::ServerTls;

/// A gRPC service and what serving it takes.
pub struct Grpc {
    /// The service's routes, behind its API-token check.
    pub routes: Routes,
    /// The services' full names, e.g. `herald.v1.Publisher`: health
    /// reports them and reflection describes them.
    pub names: &'static [&'static str],
    /// The encoded file descriptor set that describes it.
    pub descriptors: &'static [u8],
    /// TLS for the port; `None` serves plain text.
    pub tls: Option<ServerTls>,
    /// The service's readiness (the admin port's `/readyz`): warm once
    /// `warm` completes, draining as soon as shutdown begins; the health
    /// of the service and of the server (`""`) follow it.
    pub ready: Readiness,
}

/// An HTTP API served beside gRPC on the same port (herald-publish's
/// JSON API).
pub trait HttpApi: Clone + Send + Sync + 'static {
    /// Whether `request` is for this API rather than for gRPC.
    fn wants(&self, request: &Request<Incoming>) -> bool;

    /// Answers `request`; errors are responses too.
    fn handle(
        self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send + 'static;
}

impl Grpc {
    /// Serves the service (HTTP/2 only) on `listener` until `shutdown`:
    /// warm once `warm` completes; then unready and not serving (health)
    /// at once, and in-flight calls finish within [`serve::CLOSE_GRACE`].
    pub async fn serve(
        self,
        listener: Listener,
        warm: impl Future<Output = ()> + Send + 'static,
        shutdown: CancellationToken,
    ) {
        let http = Http::http2_only(&listener);
        let (health, grpc) = self.routes_with_health_and_reflection().await;
        self.run(listener, http, health, move || grpc.clone(), warm, shutdown)
            .await
    }

    /// As [`Grpc::serve`], with `api` beside gRPC on the same port
    /// (HTTP/1.1 and HTTP/2).
    pub async fn serve_with<A: HttpApi>(
        self,
        api: A,
        listener: Listener,
        warm: impl Future<Output = ()> + Send + 'static,
        shutdown: CancellationToken,
    ) {
        let http = Http::auto(&listener);
        let (health, grpc) = self.routes_with_health_and_reflection().await;
        let dispatch = Dispatch {
            grpc: grpc.inner,
            api,
        };
        self.run(
            listener,
            http,
            health,
            move || dispatch.clone(),
            warm,
            shutdown,
        )
        .await
    }

    /// The service's routes with health (reporting its readiness now) and
    /// reflection added, and the health reporter.
    async fn routes_with_health_and_reflection(&self) -> (Health, GrpcRoutes) {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health {
            reporter,
            names: self.names,
        };
        health.set(self.ready.is_ready()).await;
        let routes = self.routes.clone().add_service(health_service);
        let routes = with_reflection(routes, self.descriptors, self.names);
        (
            health,
            GrpcRoutes {
                inner: routes.prepare(),
            },
        )
    }

    /// Serves connections with `service()`; see [`Grpc::serve`].
    async fn run<F, S>(
        self,
        listener: Listener,
        http: Http,
        health: Health,
        service: F,
        warm: impl Future<Output = ()> + Send + 'static,
        shutdown: CancellationToken,
    ) where
        F: Fn() -> S,
        S: hyper::service::Service<
                Request<Incoming>,
                Response = Response<Body>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        // The certificate files are watched while the port is open.
        let watching = CancellationToken::new();
        let tls = self.tls.as_ref().map(|tls| tls.start(watching.clone()));
        let ready = self.ready.clone();
        let becoming_ready = tokio::spawn(async move {
            warm.await;
            ready.warm();
        });
        let following = tokio::spawn(health.clone().follow(self.ready.subscribe()));
        let stopping = async {
            shutdown.cancelled().await;
            becoming_ready.abort();
            self.ready.drain();
            // Said here as well as by `following`, so that it is said
            // before the first connection is asked to close.
            health.set(false).await;
        };
        serve::serve(listener, http, tls, service, stopping).await;
        following.abort();
        watching.cancel();
    }
}

/// The health of the services a port serves, and of the server as a
/// whole (`""`, what a check that names no service asks).
#[derive(Clone)]
struct Health {
    reporter: tonic_health::server::HealthReporter,
    names: &'static [&'static str],
}

impl Health {
    async fn set(&self, serving: bool) {
        let status = match serving {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        for service in std::iter::once("").chain(self.names.iter().copied()) {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Serving exactly while `ready` says ready, until the readiness is gone.
    async fn follow(self, mut ready: watch::Receiver<State>) {
        loop {
            let serving = ready.borrow_and_update().is_ready();
            self.set(serving).await;
            if ready.changed().await.is_err() {
                return;
            }
        }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// gRPC routes as a hyper service.
#[derive(Clone)]
struct GrpcRoutes {
    inner: Routes,
}

impl hyper::service::Service<Request<Incoming>> for GrpcRoutes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        Box::pin(call_routes(self.inner.clone(), request))
    }
}

/// One port, two APIs: what `api` wants goes to it, the rest to gRPC.
#[derive(Clone)]
struct Dispatch<A> {
    grpc: Routes,
    api: A,
}

impl<A: HttpApi> hyper::service::Service<Request<Incoming>> for Dispatch<A> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        if self.api.wants(&request) {
            let api = self.api.clone();
            return Box::pin(async move { Ok(api.handle(request).await) });
        }
        Box::pin(call_routes(self.grpc.clone(), request))
    }
}

async fn call_routes(
    mut routes: Routes,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut routes, cx)).await?;
    routes.call(request).await
}
