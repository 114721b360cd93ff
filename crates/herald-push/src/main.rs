use herald_core::readiness::Readiness;
use herald_core::{cli, service, shutdown};
use herald_push::{Args, PushWorker};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() {
    let args: Args = cli::parse();
    let config = args
        .validate()
        .unwrap_or_else(|e| cli::misconfigured(e.flag, e.problem));
    let name = format!("herald-push-worker {}", config.node_id);
    let started = service::start(&args.common, args.listen, args.admin_listen, &name).await;
    args.api_auth.warn_if_insecure(args.listen);

    let mut registry = Registry::default();
    let nats = started.nats.clone();
    let worker = PushWorker::start(config, started.nats, &mut registry)
        .await
        .unwrap_or_else(|e| cli::misconfigured("--nats-url / --fcm-credentials", e));
    let ready = Readiness::default();
    tracing::info!(listen = %args.listen, admin = %args.admin_listen, "herald-push-worker running");
    let serving = worker.serve(started.listener, ready.clone(), shutdown::on_signal());
    service::run_with_admin(started.admin_listener, registry, ready, serving).await;
    // Queue acknowledgements and device-bucket writes may still be queued.
    shutdown::close_nats(&nats).await;
    drop(started.telemetry);
}
