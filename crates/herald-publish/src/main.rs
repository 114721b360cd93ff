use std::sync::Arc;

use herald_core::{admin, cli, nats, shutdown, telemetry};
use herald_publish::{Args, PublishServer};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() {
    let args: Args = cli::parse();
    let config = args
        .validate()
        .unwrap_or_else(|(flag, e)| cli::misconfigured(flag, e));
    if let Err(e) = telemetry::init(args.common.log_format, &args.common.log) {
        cli::misconfigured("--log", e);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| {
            cli::misconfigured("--listen", format!("cannot bind {}: {e}", args.listen))
        });
    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .unwrap_or_else(|e| {
            cli::misconfigured(
                "--admin-listen",
                format!("cannot bind {}: {e}", args.admin_listen),
            )
        });
    let name = format!("herald-publish {}", config.node_id);
    let client = nats::connect(&args.common.nats_url, &name)
        .await
        .unwrap_or_else(|e| {
            cli::misconfigured(
                "--nats-url",
                format!("cannot connect to {}: {e}", args.common.nats_url.join(",")),
            )
        });
    let server_max = client.server_info().max_payload;
    if config.max_payload > server_max {
        cli::misconfigured(
            "--max-payload",
            format!(
                "{} exceeds the NATS server's max_payload of {server_max}",
                config.max_payload
            ),
        );
    }

    let mut registry = Registry::default();
    let server = PublishServer::new(config, client, &mut registry);
    let shutdown = shutdown::on_signal();
    let stop_admin = tokio_util::sync::CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(registry),
        server.readiness(),
        stop_admin.clone(),
    ));
    tracing::info!(listen = %args.listen, admin = %args.admin_listen, "herald-publish serving");
    if let Err(e) = server.serve(listener, shutdown).await {
        tracing::error!(error = %e, "gRPC server failed");
    }
    stop_admin.cancel();
    let _ = admin.await;
}
