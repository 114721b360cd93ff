//! Runs Herald services in-process for end-to-end tests: each on port 0,
//! with its own NATS connection, metrics registry and admin port, stopped
//! through the same shutdown token a signal would cancel.
//!
//! # Layout
//! - [`Stack`] (`stack.rs`): NATS and the services a test needs, started
//!   by one builder; what most tests start with.
//! - [`Running`] and the `start_*` functions: one service in this process,
//!   for a test that starts one later than its stack (a replacement edge,
//!   a restarted presence).
//! - [`ServiceProcess`], [`EdgeProcess`]: a Herald binary as its own process.
//! - `metrics.rs`: `/metrics` parsed with a strict OpenMetrics parser.
//! - Clients: publishing, SSE URLs and streams, presence queries.

use std::net::SocketAddr;

mod metrics;
mod stack;
pub use metrics::{families, metric_at, metrics_at, sample_value};
pub use stack::{Service, Stack, StackBuilder, publish_config};

use herald_core::readiness::Readiness;
use herald_core::service;
use herald_nats::connection::NatsSecurity;
use herald_proto::v1::presence_client::PresenceClient;
use herald_proto::v1::publisher_client::PublisherClient;
use herald_proto::v1::{
    GetPresenceRequest, PublishRequest, PublishResponse, publish_request::Target,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// HS256 secret every test edge accepts.
pub const SECRET: &str = "e2e-secret-0123456789-0123456789-abc";

/// A service running in this process.
pub struct Running {
    /// Main listen address.
    pub addr: SocketAddr,
    /// Admin port address.
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn start<F>(
        registry: Registry,
        ready: Readiness,
        serve: impl FnOnce(TcpListener, CancellationToken) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let serving = serve(listener, shutdown.clone());
        let task = tokio::spawn(service::run_with_admin(
            admin_listener,
            registry,
            ready,
            serving,
        ));
        Self {
            addr,
            admin,
            shutdown,
            task,
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The body of `/metrics`.
    pub async fn metrics(&self) -> String {
        metrics_at(self.admin).await
    }

    /// The value of one sample, e.g. `herald_edge_closes_total{reason="slow_consumer"}`; 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        sample_value(&self.metrics().await, sample)
    }

    /// Waits until `/readyz` answers 200 (e.g. presence is complete).
    pub async fn wait_ready(&self) {
        let readyz = format!("http://{}/readyz", self.admin);
        herald_testing::eventually(
            std::time::Duration::from_secs(10),
            "the service to be ready",
            || async { (reqwest::get(&readyz).await.ok()?.status() == 200).then_some(()) },
        )
        .await;
    }

    /// What a load balancer hears; see [`readiness_at`].
    pub async fn readiness(&self, services: &[&str]) -> Option<bool> {
        readiness_at(self.admin, self.addr, services).await
    }

    /// Waits until `/readyz` and the health of `services` all say `ready`;
    /// how long that took.
    pub async fn until_readiness(
        &self,
        services: &[&str],
        ready: bool,
        within: std::time::Duration,
    ) -> std::time::Duration {
        let started = std::time::Instant::now();
        let what = format!("/readyz and the health of {services:?} to say ready = {ready}");
        herald_testing::eventually(within, &what, || async {
            (self.readiness(services).await == Some(ready)).then_some(())
        })
        .await;
        started.elapsed()
    }

    /// Starts the shutdown (as SIGTERM does) and waits until the service returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Starts the shutdown without waiting.
    pub fn signal_shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// What a load balancer hears from a service with its admin port at
/// `admin` and gRPC at `grpc`: `Some(ready)` when `/readyz` (200 or 503)
/// and the gRPC health of the server (`""`) and of each of `services`
/// agree on it, `None` when they disagree or cannot be asked. No
/// `services`: `/readyz` alone (the edge).
pub async fn readiness_at(admin: SocketAddr, grpc: SocketAddr, services: &[&str]) -> Option<bool> {
    let readyz = format!("http://{admin}/readyz");
    let ready = match reqwest::get(&readyz).await.ok()?.status().as_u16() {
        200 => true,
        503 => false,
        _ => return None,
    };
    if services.is_empty() {
        return Some(ready);
    }
    let channel = Channel::from_shared(format!("http://{grpc}")).ok()?;
    let channel = channel.connect().await.ok()?;
    for service in [""].iter().chain(services) {
        let serving = herald_testing::grpc::serving(channel.clone(), service).await;
        if serving.ok()? != ready {
            return None;
        }
    }
    Some(ready)
}

/// A binary of this workspace, built beside the test binaries
/// (`cargo nextest run --workspace` builds them all).
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p {name}` first",
        path.display()
    );
    path
}

/// Comma-separated NATS URLs as a list, as `--nats-url` takes them.
fn urls(nats_url: &str) -> Vec<String> {
    nats_url.split(',').map(str::to_owned).collect()
}

/// A Herald binary running as its own process, killed when dropped.
pub struct ServiceProcess {
    child: std::process::Child,
    /// Its admin port (`/metrics`, `/readyz`).
    pub admin: SocketAddr,
}

impl ServiceProcess {
    /// Runs `binary` with `args`, `--admin-listen` on a free port and
    /// `envs`; returns once `/readyz` answers 200.
    pub async fn start(binary_name: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let admin = free_addr();
        let child = std::process::Command::new(binary(binary_name))
            .args(args)
            .args(["--admin-listen", &admin.to_string()])
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary_name}: {e}"));
        // Owned before waiting, so a panic below still kills the process.
        let service = Self { child, admin };
        let readyz = format!("http://{admin}/readyz");
        herald_testing::eventually(
            std::time::Duration::from_secs(10),
            &format!("{binary_name} to be ready"),
            || async {
                let response = reqwest::get(&readyz).await.ok()?;
                (response.status() == 200).then_some(())
            },
        )
        .await;
        service
    }

    /// Its process id, e.g. to count its open files in `/proc/<pid>/fd`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process vanishes without closing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an orchestrator stopping it sends; then waits (up to
    /// `timeout`) for it to exit, as the orchestrator does before
    /// starting its replacement.
    pub async fn terminate(&mut self, timeout: std::time::Duration) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        herald_testing::eventually(timeout, "the process to exit after SIGTERM", || {
            let exited = self.child.try_wait().unwrap();
            async move { exited }
        })
        .await;
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback address with a port free a moment ago.
pub fn free_addr() -> SocketAddr {
    herald_testing::process::free_addr()
}

/// herald-edge as its own process.
pub struct EdgeProcess {
    process: ServiceProcess,
    /// Where it serves SSE; kept across restarts.
    pub addr: SocketAddr,
}

impl EdgeProcess {
    /// Starts herald-edge on `nats_url`, on `addr` or a free port, with a
    /// short reconnect hint and [`nats_subscriber`]; returns once it is ready.
    pub async fn start(nats_url: &str, addr: Option<SocketAddr>) -> Self {
        Self::start_with(nats_url, addr, &[]).await
    }

    /// Like [`EdgeProcess::start`], with more flags.
    pub async fn start_with(nats_url: &str, addr: Option<SocketAddr>, flags: &[&str]) -> Self {
        Self::start_with_env(nats_url, addr, flags, &[]).await
    }

    /// Like [`EdgeProcess::start_with`], with environment variables.
    pub async fn start_with_env(
        nats_url: &str,
        addr: Option<SocketAddr>,
        flags: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let addr = addr.unwrap_or_else(free_addr);
        let listen = addr.to_string();
        let mut args = vec!["--nats-url", nats_url, "--jwt-secret", SECRET];
        args.extend(["--retry", "500ms", "--listen", &listen]);
        args.extend(["--nats-subscriber", nats_subscriber().as_str()]);
        args.extend(flags);
        let process = ServiceProcess::start("herald-edge", &args, envs).await;
        Self { process, addr }
    }

    /// SIGKILL: the process vanishes without closing anything.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits for the drain to end and the process to exit.
    pub async fn terminate(&mut self, timeout: std::time::Duration) {
        self.process.terminate(timeout).await;
    }

    /// The process, e.g. for its pid or admin port.
    pub fn process(&self) -> &ServiceProcess {
        &self.process
    }
}

/// What holds the subscriptions of the edges these tests start:
/// `HERALD_E2E_NATS_SUBSCRIBER` (`lean`, the default, or `async-nats`),
/// so that the same suites check the lean subscriber against async-nats
/// (scripts/test.sh runs the fan-out, resume, failover and cluster suites
/// both ways).
pub fn nats_subscriber() -> herald_edge::NatsSubscriber {
    const VAR: &str = "HERALD_E2E_NATS_SUBSCRIBER";
    match std::env::var(VAR) {
        Ok(value) => <herald_edge::NatsSubscriber as clap::ValueEnum>::from_str(&value, false)
            .unwrap_or_else(|_| panic!("{VAR}={value:?}: want lean or async-nats")),
        Err(_) => herald_edge::NatsSubscriber::default(),
    }
}

/// Whether the edges under test hold their subscriptions on the lean
/// subscriber. A test of what only it does (`what`: refusals by subject,
/// moves away from a server in lame duck mode, oversized messages)
/// returns early otherwise, saying so.
pub fn lean_subscriber(what: &str) -> bool {
    let lean = nats_subscriber() == herald_edge::NatsSubscriber::Lean;
    if !lean {
        eprintln!("skipped with async-nats subscribers: {what} is the lean subscriber's alone");
    }
    lean
}

/// Starts an edge on `nats_url` with `config`, holding its subscriptions
/// with [`nats_subscriber`].
pub async fn start_edge(nats_url: &str, config: herald_edge::Config) -> Running {
    start_edge_as(&urls(nats_url), &Default::default(), config).await
}

/// [`start_edge`] on `urls`, logged in to NATS with `security`. Each
/// service names its connection as its binary does (`herald-edge …`): the
/// name's first word is its inbox prefix, which NATS permissions check.
pub(crate) async fn start_edge_as(
    urls: &[String],
    security: &NatsSecurity,
    config: herald_edge::Config,
) -> Running {
    let (client, _) = herald_nats::connection::connect(urls, security, "herald-edge e2e")
        .await
        .expect("the edge connects to NATS");
    let mut registry = Registry::default();
    let nats = herald_edge::Nats {
        client,
        urls,
        security,
        name: "herald-edge e2e",
        subscriber: nats_subscriber(),
    };
    let edge = herald_edge::Edge::connect(config, nats, &mut registry)
        .await
        .unwrap();
    let ready = edge.readiness();
    Running::start(registry, ready, |listener, shutdown| {
        edge.serve(listener, shutdown)
    })
    .await
}

/// herald-publish's config for a 3-node cluster: history with three replicas.
pub fn replicated_publish(node: &str) -> herald_publish::Config {
    let mut config = herald_publish::Config::defaults(node);
    config.history.history_replicas = 3;
    config
}

/// An edge that knows history has three replicas, as deployments say to
/// every service: it then reads history from stream leaders, since a
/// replica's direct get may lag behind what was published.
pub fn replicated_edge(node: &str) -> herald_edge::Config {
    let mut config = edge_config(node);
    config.history.history_replicas = 3;
    config
}

/// herald-publish in `region` of a supercluster: history with `replicas`
/// in that region's cluster, where what is published here is stored.
pub fn regional_publish(node: &str, region: &str, replicas: u8) -> herald_publish::Config {
    let mut config = herald_publish::Config::defaults(node);
    config.history.history_replicas = replicas;
    config.region = region_named(region);
    config
}

/// An edge in `region` (first of `regions`, which name every region of
/// the supercluster) whose history has `replicas`: its streams follow
/// events stored in each region.
pub fn regional_edge(
    node: &str,
    region: &str,
    regions: &[&str],
    replicas: u8,
) -> herald_edge::Config {
    let mut config = edge_config(node);
    config.history.history_replicas = replicas;
    let own = region_named(region);
    let others = regions
        .iter()
        .map(|r| region_named(r))
        .filter(|r| *r != own);
    config.regions = std::iter::once(own.clone()).chain(others).collect();
    config
}

fn region_named(name: &str) -> herald_domain::region::Region {
    herald_domain::region::Region::parse(name).expect("a region name")
}

/// An edge config with test defaults and [`SECRET`].
pub fn edge_config(node: &str) -> herald_edge::Config {
    herald_edge::Config::with_secret(node, SECRET)
}

/// Waits until `server`'s history streams exist: tests publish persisted
/// events at once, and herald-publish creates them in the background.
pub async fn until_history_streams(server: &herald_publish::PublishServer) {
    let streams = server.streams();
    let created = tokio::time::timeout(std::time::Duration::from_secs(30), streams.wait());
    created
        .await
        .expect("the history streams created within 30 s");
}

/// Starts herald-publish on `nats_url` with `config`.
pub async fn start_publish(nats_url: &str, config: herald_publish::Config) -> Running {
    start_publish_as(&urls(nats_url), &Default::default(), config).await
}

/// [`start_publish`] on `urls`, logged in to NATS with `security`.
pub(crate) async fn start_publish_as(
    urls: &[String],
    security: &NatsSecurity,
    config: herald_publish::Config,
) -> Running {
    let (nats, losses) = herald_nats::connection::connect(urls, security, "herald-publish e2e")
        .await
        .expect("herald-publish connects to NATS");
    let mut registry = Registry::default();
    let server =
        herald_publish::PublishServer::start(config, nats, losses.subscribe(), &mut registry)
            .await
            .expect("herald-publish start");
    until_history_streams(&server).await;
    let ready = server.readiness();
    Running::start(registry, ready, |listener, shutdown| async move {
        server.serve(listener, shutdown).await.expect("gRPC server");
    })
    .await
}

/// Starts a herald-presence replica on `nats_url`.
pub async fn start_presence(nats_url: &str, config: herald_presence::Config) -> Running {
    start_presence_as(&urls(nats_url), &Default::default(), config).await
}

/// [`start_presence`] on `urls`, logged in to NATS with `security`.
pub(crate) async fn start_presence_as(
    urls: &[String],
    security: &NatsSecurity,
    config: herald_presence::Config,
) -> Running {
    let (nats, losses) = herald_nats::connection::connect(urls, security, "herald-presence e2e")
        .await
        .expect("herald-presence connects to NATS");
    let mut registry = Registry::default();
    let server =
        herald_presence::PresenceServer::start(config, nats, losses.subscribe(), &mut registry)
            .await
            .expect("presence subscriptions");
    let ready = server.readiness();
    Running::start(registry, ready, |listener, shutdown| async move {
        server.serve(listener, shutdown).await.expect("gRPC server");
    })
    .await
}

/// A Presence client for a running herald-presence.
pub async fn presence_client(running: &Running) -> PresenceClient<Channel> {
    PresenceClient::connect(running.url()).await.unwrap()
}

/// `(connections, nodes)` of each of `users`, as `GetPresence` answers.
pub async fn presence_of(running: &Running, users: &[&str]) -> Vec<(u32, Vec<String>)> {
    let request = GetPresenceRequest {
        user_ids: users.iter().map(|u| u.to_string()).collect(),
    };
    let response = presence_client(running)
        .await
        .get_presence(request)
        .await
        .expect("GetPresence")
        .into_inner();
    response
        .users
        .into_iter()
        .map(|u| {
            assert_eq!(u.online, u.connections > 0, "{u:?}");
            (u.connections, u.nodes)
        })
        .collect()
}

/// A push-worker configuration against `fcm`, with short backoffs; the
/// service-account file goes into `dir`.
pub fn push_config(
    fcm: &herald_testing::fcm::FakeFcm,
    dir: &std::path::Path,
) -> herald_push::Config {
    let account = fcm.service_account(dir);
    let args = <herald_push::Args as clap::Parser>::parse_from([
        "herald-push-worker",
        "--node-id",
        "push",
        "--listen",
        "127.0.0.1:0",
        "--fcm-credentials",
        account.to_str().unwrap(),
        "--fcm-endpoint",
        &fcm.endpoint(),
        "--fcm-backoff",
        "20ms",
        "--fcm-max-backoff",
        "200ms",
    ]);
    args.validate().unwrap_or_else(|e| panic!("{e}"))
}

/// Starts herald-push-worker on `nats_url` with `config`.
pub async fn start_push(nats_url: &str, config: herald_push::Config) -> Running {
    start_push_as(&urls(nats_url), &Default::default(), config).await
}

/// [`start_push`] on `urls`, logged in to NATS with `security`.
pub(crate) async fn start_push_as(
    urls: &[String],
    security: &NatsSecurity,
    config: herald_push::Config,
) -> Running {
    let (nats, _) = herald_nats::connection::connect(urls, security, "herald-push-worker e2e")
        .await
        .expect("the push worker connects to NATS");
    let mut registry = Registry::default();
    let worker = herald_push::PushWorker::start(config, nats, &mut registry)
        .await
        .expect("push worker start");
    let ready = Readiness::default();
    let serving_ready = ready.clone();
    Running::start(registry, ready, |listener, shutdown| {
        worker.serve(listener, serving_ready, shutdown)
    })
    .await
}

/// A Publisher client for a running herald-publish.
pub async fn publisher(running: &Running) -> PublisherClient<Channel> {
    PublisherClient::connect(running.url()).await.unwrap()
}

/// Publishes `data` to `users`, panicking on error.
pub async fn publish_to_users(
    client: &mut PublisherClient<Channel>,
    users: &[&str],
    data: &str,
) -> PublishResponse {
    let target = Target::users(users);
    publish(client, target, "", data).await.expect("publish")
}

/// Publishes `data` to `users` on core NATS (`ephemeral`), panicking on error.
pub async fn publish_ephemeral(client: &mut PublisherClient<Channel>, users: &[&str], data: &str) {
    let request = PublishRequest {
        target: Some(Target::users(users)),
        data: data.to_owned(),
        ephemeral: true,
        ..Default::default()
    };
    client.publish(request).await.expect("publish");
}

/// Opens a stream on `edge` for `token`'s user from event id `last`.
pub async fn resume(
    http: &reqwest::Client,
    edge: &Running,
    token: &str,
    last: &str,
) -> herald_testing::sse::SseStream {
    let response = http
        .get(events_url(edge, &[]))
        .bearer_auth(token)
        .header("last-event-id", last)
        .send()
        .await
        .unwrap();
    herald_testing::sse::SseStream::from_response(response).await
}

/// Publishes ephemeral pings to `user` until `stream` (one of the user's)
/// hears one, then drains the rest: in a supercluster, a stream's
/// interest crosses the gateways a moment after it subscribes.
pub async fn until_heard(
    client: &mut PublisherClient<Channel>,
    stream: &mut herald_testing::sse::SseStream,
    user: &str,
) {
    let heard = async {
        for _ in 0..60 {
            publish_ephemeral(client, &[user], "ping").await;
            if stream
                .next_within(std::time::Duration::from_millis(300))
                .await
                .is_some()
            {
                return true;
            }
        }
        false
    };
    assert!(heard.await, "{user}'s interest never crossed the gateway");
    while stream
        .next_within(std::time::Duration::from_millis(300))
        .await
        .is_some()
    {}
}

/// Publishes `data` to `topic`, panicking on error.
pub async fn publish_to_topic(
    client: &mut PublisherClient<Channel>,
    topic: &str,
    data: &str,
) -> PublishResponse {
    publish(client, Target::Topic(topic.to_owned()), "", data)
        .await
        .expect("publish")
}

/// One Publish call.
pub async fn publish(
    client: &mut PublisherClient<Channel>,
    target: Target,
    event: &str,
    data: &str,
) -> Result<PublishResponse, tonic::Status> {
    let request = PublishRequest {
        target: Some(target),
        event: event.to_owned(),
        data: data.to_owned(),
        ..Default::default()
    };
    client
        .publish(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Opens a stream at `target` (path and query, e.g. `/v1/events`) over a
/// raw socket with a tiny receive buffer, reads the response head, and
/// then reads nothing more: a client that stopped reading.
pub async fn stalled_client(addr: SocketAddr, token: &str, target: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = stream.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// The SSE URL of `edge` following `topics`.
pub fn events_url(edge: &Running, topics: &[&str]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for topic in topics {
        query.append_pair("topic", topic);
    }
    format!("{}/v1/events?{}", edge.url(), query.finish())
}
