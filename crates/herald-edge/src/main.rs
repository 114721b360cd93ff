use herald_core::{cli, service, shutdown};
use herald_edge::{Args, Edge, Nats};
use herald_nats::agreement;
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() {
    let args: Args = cli::parse();
    let config = args
        .validate()
        .unwrap_or_else(|e| cli::misconfigured(e.flag, e.problem));
    let name = format!("herald-edge {}", config.node_id);
    let started = service::start(&args.common, args.listen, args.admin_listen, &name).await;
    // Beside the start, not before it: a JetStream still starting must
    // not hold the edge back (it serves live events meanwhile).
    let js = async_nats::jetstream::new(started.nats.clone());
    let (history, region) = (config.history.clone(), config.regions[0].clone());
    tokio::spawn(async move {
        if let Some(d) = agreement::check_history(&js, &history, &region).await {
            cli::misconfigured(d.flag, d.problem);
        }
    });

    let mut registry = Registry::default();
    let client = started.nats.clone();
    let nats = Nats {
        client: started.nats,
        urls: &args.common.nats_url,
        security: &args.common.nats_security,
        name: &name,
        subscriber: args.nats_subscriber,
    };
    let edge = Edge::connect(config, nats, &mut registry)
        .await
        .unwrap_or_else(|e| cli::misconfigured("--nats-url", e));
    let ready = edge.readiness();
    tracing::info!(listen = %args.listen, admin = %args.admin_listen, "herald-edge serving");
    let serving = edge.serve(started.listener, shutdown::on_signal());
    service::run_with_admin(started.admin_listener, registry, ready, serving).await;
    // Presence messages may still be queued.
    shutdown::close_nats(&client).await;
    drop(started.telemetry);
}
