//! Start-up and run-time scaffolding every service binary shares, so each
//! `main` only parses its flags and builds its service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use herald_nats::connection;

use crate::admin;
use crate::cli::{self, CommonArgs};
use crate::listener::{self, ADMIN_MAX_SOCKETS, Bounds, Listener};
use crate::readiness::Readiness;
use crate::telemetry;

/// What a service needs before it can serve: its sockets and NATS.
pub struct Started {
    /// The main port, bounded by `--header-timeout`, `--idle-timeout` and
    /// `--max-sockets`.
    pub listener: Listener,
    /// The admin port: the same timeouts, [`ADMIN_MAX_SOCKETS`].
    pub admin_listener: Listener,
    pub nats: async_nats::Client,
    /// When live messages may have been missed (see [`connection::Losses`]).
    pub losses: connection::LossCounter,
    /// Keeps span export running; flushes when dropped at exit.
    pub telemetry: telemetry::Guard,
}

/// Starts logging, binds both addresses and connects to NATS; any failure
/// ends the process with one line naming the flag, and exit code 2.
pub async fn start(
    common: &CommonArgs,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    name: &str,
) -> Started {
    let service = name.split(' ').next().unwrap_or(name);
    let telemetry = telemetry::init(
        common.log_format,
        &common.log,
        (service, &common.node_id()),
        common.otlp_endpoint.as_deref(),
    )
    .unwrap_or_else(|e| cli::misconfigured("--log / --otlp-endpoint", e));
    crate::memory::spawn_trimmer();
    let fd_limit = listener::raise_fd_limit();
    let bounds = common
        .listener
        .bounds()
        .unwrap_or_else(|e| cli::misconfigured(e.flag, e.problem));
    tracing::debug!(fd_limit, ?bounds, "listener bounds");
    let admin_bounds = Bounds {
        max_sockets: ADMIN_MAX_SOCKETS,
        ..bounds
    };
    let listener = Listener::new(bind("--listen", listen), bounds);
    let admin_listener = Listener::new(bind("--admin-listen", admin_listen), admin_bounds);
    let (nats, losses) = connection::connect(&common.nats_url, &common.nats_security, name)
        .await
        .unwrap_or_else(|e| {
            let urls: Vec<_> = common
                .nats_url
                .iter()
                .map(|u| connection::redact(u))
                .collect();
            let urls = urls.join(",");
            cli::misconfigured("--nats-url", format!("cannot connect to {urls}: {e}"))
        });
    if let Err(problem) = check_region(&common.region, &nats.server_info()) {
        cli::misconfigured("--region", problem);
    }
    Started {
        listener,
        admin_listener,
        nats,
        losses,
        telemetry,
    }
}

/// A named region is its NATS cluster: its streams are placed there by
/// that name, so a service whose server is in another cluster (or in
/// none) would store its region's events elsewhere, or nowhere.
fn check_region(
    region: &herald_domain::region::Region,
    server: &async_nats::ServerInfo,
) -> Result<(), String> {
    if region.is_unnamed() {
        return Ok(());
    }
    match server.cluster.as_deref() {
        Some(cluster) if cluster == region.as_str() => Ok(()),
        Some(cluster) => Err(format!(
            "`{region}` given, but the NATS server {} is in cluster `{cluster}`: \
             a region's services connect to that region's NATS cluster, which bears its name",
            server.server_name
        )),
        None => Err(format!(
            "`{region}` given, but the NATS server {} is in no cluster: \
             a region is a NATS cluster named after it, joined to the others by gateways",
            server.server_name
        )),
    }
}

/// Connections the kernel queues before they are accepted. Tokio's 1,024
/// overflows when thousands of clients reconnect at once (an edge died),
/// and each overflow costs its client a SYN retransmit of a second or
/// more; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

fn bind(flag: &str, addr: SocketAddr) -> TcpListener {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let listener = socket.and_then(|socket| {
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    });
    listener.unwrap_or_else(|e| cli::misconfigured(flag, format!("cannot bind {addr}: {e}")))
}

/// Runs `serving` with the admin port beside it. The admin port stays up
/// until `serving` returns, so `/readyz` can report a drain in progress.
/// Its sockets are counted under `herald_admin_`.
pub async fn run_with_admin(
    admin_listener: impl Into<Listener>,
    mut registry: Registry,
    ready: Readiness,
    serving: impl Future<Output = ()>,
) {
    let sockets =
        listener::SocketMetrics::register(registry.sub_registry_with_prefix("herald_admin"));
    let admin_listener = admin_listener.into().counting_in(sockets);
    let stop_admin = CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(registry),
        ready,
        stop_admin.clone(),
    ));
    serving.await;
    stop_admin.cancel();
    let _ = admin.await;
}
