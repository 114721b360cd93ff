//! The herald-push-worker binary as operators run it: a missing or broken
//! service-account key, or a bad flag, ends it with one line and exit code
//! 2; its device API refuses to run open on a reachable address, and with
//! a token answers nothing without it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use herald_testing::process::{Service, free_addr};
use herald_testing::{NatsServer, eventually};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald-push-worker"))
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_misconfigured(output: Output, flag: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(flag), "{stderr:?} should name {flag}");
}

#[test]
fn bad_credentials_and_flags_are_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let not_rsa = dir.path().join("not-rsa.json");
    let account = r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n","project_id":"p"}"#;
    std::fs::write(&not_rsa, account).unwrap();
    let no_project = dir.path().join("no-project.json");
    let key = include_str!("../../herald-testing/keys/rsa.pem");
    let account = serde_json::json!({"client_email": "a@b", "private_key": key});
    std::fs::write(&no_project, account.to_string()).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    assert_misconfigured(run(&[]), "--fcm-credentials");
    assert_misconfigured(
        run(&["--fcm-credentials", "/nonexistent.json"]),
        "--fcm-credentials",
    );
    assert_misconfigured(
        run(&["--fcm-credentials", &path(&garbage)]),
        "--fcm-credentials",
    );
    assert_misconfigured(
        run(&["--fcm-credentials", &path(&not_rsa)]),
        "--fcm-credentials",
    );
    assert_misconfigured(
        run(&["--fcm-credentials", &path(&no_project)]),
        "--fcm-project-id",
    );
    let valid = [
        "--fcm-credentials",
        &path(&no_project),
        "--fcm-project-id",
        "p",
    ];
    let with = |extra: &[&str]| {
        run(&valid
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>())
    };
    assert_misconfigured(with(&["--fcm-endpoint", "ftp://x"]), "--fcm-endpoint");
    assert_misconfigured(with(&["--fcm-max-attempts", "0"]), "--fcm-max-attempts");
    assert_misconfigured(
        with(&["--fcm-backoff", "10s", "--fcm-max-backoff", "1s"]),
        "--fcm-max-backoff",
    );
    assert_misconfigured(with(&["--api-token", "short"]), "--api-token");
    // The device API listens on every interface by default: no token, no start.
    assert_misconfigured(with(&[]), "--api-token");
    assert_misconfigured(with(&["--listen", "[::]:50053"]), "--api-token");
    let dead = ["--nats-url", "nats://127.0.0.1:1"];
    assert_misconfigured(
        with(&[&dead[..], &["--listen", "127.0.0.1:0"]].concat()),
        "--nats-url",
    );
    assert_misconfigured(
        with(&[&dead[..], &["--insecure-no-auth"]].concat()),
        "--nats-url",
    );
    let token = ["--api-token", TOKEN];
    assert_misconfigured(with(&[&dead[..], &token[..]].concat()), "--nats-url");
}

const TOKEN: &str = "process-api-token-0123456789";

/// A service-account file FCM is never asked about: the device API needs
/// none of it.
fn account(dir: &Path) -> String {
    let path = dir.join("account.json");
    let key = include_str!("../../herald-testing/keys/rsa.pem");
    let account = serde_json::json!({"client_email": "a@b", "private_key": key, "project_id": "p"});
    std::fs::write(&path, account.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Starts the worker with `listen` and `envs`; returns once its device API
/// answers HTTP (`/readyz` waits for herald-publish's queue, absent here).
async fn start(nats: &NatsServer, dir: &Path, listen: &str, envs: &[(&str, &str)]) -> Service {
    let (url, account) = (nats.client_url(), account(dir));
    let args = [
        "--nats-url",
        &url,
        "--fcm-credentials",
        &account,
        "--listen",
        listen,
    ];
    let service = Service::spawn(
        Path::new(env!("CARGO_BIN_EXE_herald-push-worker")),
        &args,
        envs,
    );
    let port = listen.rsplit(':').next().unwrap();
    let api = format!("http://127.0.0.1:{port}/v1/devices/alice");
    eventually(Duration::from_secs(20), "the device API", || async {
        reqwest::get(&api).await.ok().map(|_| ())
    })
    .await;
    service
}

#[tokio::test]
async fn on_loopback_or_with_insecure_no_auth_it_starts_without_a_token() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr().to_string();
    let service = start(&nats, dir.path(), &listen, &[]).await;
    let listed = reqwest::get(format!("http://{listen}/v1/devices/alice"))
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert!(
        !service.stderr().contains("insecure"),
        "{}",
        service.stderr()
    );
    drop(service);

    let port = free_addr().port();
    let insecure = [("HERALD_INSECURE_NO_AUTH", "true")];
    let service = start(&nats, dir.path(), &format!("0.0.0.0:{port}"), &insecure).await;
    service.logged(&["WARN", "--insecure-no-auth"]).await;
}

#[tokio::test]
async fn with_a_token_every_device_route_answers_401_without_it() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let envs = [("HERALD_API_TOKEN", TOKEN)];
    let service = start(&nats, dir.path(), &format!("0.0.0.0:{port}"), &envs).await;
    let url = format!("http://127.0.0.1:{port}/v1/devices/alice");
    let http = reqwest::Client::new();
    let body = r#"{"token":"device-token-1"}"#;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        for token in [None, Some("wrong-token-0123456789")] {
            let mut request = http.request(method.clone(), &url).body(body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let status = request.send().await.unwrap().status();
            assert_eq!(status, 401, "{method} {token:?}");
        }
    }
    // Unknown paths too: nothing is served before the token is checked.
    let other = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);
    let put = http
        .put(&url)
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let listed = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(
        listed.text().await.unwrap(),
        r#"{"tokens":["device-token-1"]}"#
    );
    // The admin port has no token-protected routes.
    let healthz = reqwest::get(format!("http://{}/healthz", service.admin))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
}
