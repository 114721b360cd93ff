use herald_core::{cli, service, shutdown};
use herald_presence::{Args, PresenceServer};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() {
    let args: Args = cli::parse();
    let config = args
        .validate()
        .unwrap_or_else(|e| cli::misconfigured(e.flag, e.problem));
    let name = format!("herald-presence {}", config.node_id);
    let started = service::start(&args.common, args.listen, args.admin_listen, &name).await;
    args.api_auth.warn_if_insecure(args.listen);

    let mut registry = Registry::default();
    let nats = started.nats.clone();
    let server = PresenceServer::start(
        config,
        started.nats,
        started.losses.subscribe(),
        &mut registry,
    )
    .await
    .unwrap_or_else(|e| cli::misconfigured("--nats-url", format!("cannot subscribe: {e}")));
    let ready = server.readiness();
    tracing::info!(listen = %args.listen, admin = %args.admin_listen, "herald-presence serving");
    let serving = async {
        if let Err(e) = server.serve(started.listener, shutdown::on_signal()).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    };
    service::run_with_admin(started.admin_listener, registry, ready, serving).await;
    // Replies to presence queries may still be queued.
    shutdown::close_nats(&nats).await;
    drop(started.telemetry);
}
