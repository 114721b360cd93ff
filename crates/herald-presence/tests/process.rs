//! The herald-presence binary as operators run it: it refuses to serve an
//! open API on a reachable address; with a token, only health and
//! reflection answer without it.

use std::path::Path;

use herald_proto::v1::presence_client::PresenceClient;
use herald_proto::v1::{GetPresenceRequest, StatsRequest};
use herald_testing::process::{Service, assert_misconfigured, free_addr, run};
use herald_testing::{NatsServer, grpc};
use tonic_health::pb::health_check_response::ServingStatus;

const TOKEN: &str = "process-api-token-0123456789";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald-presence"))
}

async fn start(nats: &NatsServer, listen: &str, args: &[&str], envs: &[(&str, &str)]) -> Service {
    let url = nats.client_url();
    let mut all = vec!["--nats-url", &url, "--listen", listen];
    all.extend(args);
    let mut service = Service::spawn(binary(), &all, envs);
    service.ready().await;
    service
}

fn ask(token: Option<&str>) -> tonic::Request<GetPresenceRequest> {
    let mut request = tonic::Request::new(GetPresenceRequest {
        user_ids: vec!["alice".into()],
    });
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[test]
fn an_open_api_on_a_reachable_address_does_not_start() {
    let dead = format!("nats://{}", free_addr());
    let reachable = format!("[::]:{}", free_addr().port());
    let base = ["--nats-url", dead.as_str(), "--listen", reachable.as_str()];
    assert_misconfigured(&run(binary(), &base, &[]), "--api-token");
    assert_misconfigured(&run(binary(), &["--nats-url", &dead], &[]), "--api-token");
    let short = [base.as_slice(), &["--api-token", "short"]].concat();
    assert_misconfigured(&run(binary(), &short, &[]), "--api-token");
    let tokened = [("HERALD_API_TOKEN", TOKEN)];
    assert_misconfigured(&run(binary(), &base, &tokened), "--nats-url");
    let insecure = [base.as_slice(), &["--insecure-no-auth"]].concat();
    assert_misconfigured(&run(binary(), &insecure, &[]), "--nats-url");
}

#[tokio::test]
async fn on_loopback_it_starts_without_a_token_and_insecure_no_auth_warns() {
    let nats = NatsServer::start();
    let listen = free_addr().to_string();
    let service = start(&nats, &listen, &[], &[]).await;
    let mut client = PresenceClient::connect(format!("http://{listen}"))
        .await
        .unwrap();
    assert!(client.get_presence(ask(None)).await.is_ok());
    assert!(
        !service.stderr().contains("insecure"),
        "{}",
        service.stderr()
    );

    let port = free_addr().port();
    let everywhere = format!("0.0.0.0:{port}");
    let insecure = [("HERALD_INSECURE_NO_AUTH", "true")];
    let service = start(&nats, &everywhere, &[], &insecure).await;
    service.logged(&["WARN", "--insecure-no-auth"]).await;
    let mut client = PresenceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    assert!(client.get_presence(ask(None)).await.is_ok());
}

#[tokio::test]
async fn with_a_token_only_health_and_reflection_answer_without_it() {
    let nats = NatsServer::start();
    let port = free_addr().port();
    let listen = format!("0.0.0.0:{port}");
    let _service = start(&nats, &listen, &["--api-token", TOKEN], &[]).await;
    let address = format!("127.0.0.1:{port}");
    let channel = grpc::channel(&address).await;
    let mut client = PresenceClient::new(channel.clone());

    for token in [None, Some("wrong-token-0123456789")] {
        let refused = client.get_presence(ask(token)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{token:?}");
    }
    let stats = client.stats(StatsRequest {}).await.unwrap_err();
    assert_eq!(stats.code(), tonic::Code::Unauthenticated);
    assert!(client.get_presence(ask(Some(TOKEN))).await.is_ok());

    let health = grpc::health(channel.clone(), "herald.v1.Presence").await;
    assert_eq!(health.unwrap(), ServingStatus::Serving);
    let services = grpc::reflected_services(channel).await.unwrap();
    assert!(
        services.contains(&"herald.v1.Presence".to_owned()),
        "{services:?}"
    );
}
