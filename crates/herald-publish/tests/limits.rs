//! Limits herald-publish checks as it starts, in the library, so every
//! embedding and in-process test meets them, not only the binary.

use herald_publish::server::StartError;
use herald_publish::{Config, PublishServer};
use herald_testing::NatsServer;
use prometheus_client::registry::Registry;

async fn start(nats: &NatsServer, max_payload: usize) -> Result<PublishServer, StartError> {
    let urls = [nats.client_url()];
    let (client, losses) = herald_nats::connection::connect(&urls, &Default::default(), "limits")
        .await
        .unwrap();
    let mut config = Config::defaults("limits");
    config.max_payload = max_payload;
    PublishServer::start(config, client, losses.subscribe(), &mut Registry::default()).await
}

#[tokio::test]
async fn a_max_payload_nats_would_refuse_is_refused_at_start() {
    let nats = NatsServer::start_with("max_payload: 1024\n");
    let Err(refused) = start(&nats, 1025).await else {
        panic!("started with --max-payload above the NATS server's 1024");
    };
    assert!(
        matches!(
            refused,
            StartError::MaxPayloadAboveNats {
                max_payload: 1025,
                server: 1024
            }
        ),
        "{refused}"
    );
    assert_eq!(refused.flag(), "--max-payload");
    assert!(start(&nats, 1024).await.is_ok(), "NATS's own limit fits");
}
