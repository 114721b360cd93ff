//! Pages on other origins (`--allowed-origins`), as a browser's requests
//! reach the edge: over its own HTTP/1.1 stream path, hyper's HTTP/1.1 and
//! HTTP/2. A listed origin is named back with credentials and `Vary:
//! Origin`; any other origin gets no CORS headers and no stream (its
//! token is not even read); `*` answers `*` and never reads a cookie.

use herald_e2e::*;
use herald_testing::token::{Claims, Sign};
use http::{HeaderMap, HeaderValue};
use reqwest::{Client, Response};

const APP: &str = "http://app.test:3000";

/// An edge serving pages of `origins` (a `--allowed-origins` value).
async fn stack(origins: &str) -> Stack {
    let mut config = edge_config("edge");
    config.origins = herald_edge::cors::AllowedOrigins::parse(origins).unwrap();
    Stack::start(config).await
}

fn h2() -> Client {
    Client::builder().http2_prior_knowledge().build().unwrap()
}

/// `GET /v1/events` with `origin` (raw bytes) and `extra` headers.
async fn connect(
    client: &Client,
    edge: &Running,
    origin: Option<&[u8]>,
    extra: &[(&str, &str)],
) -> Response {
    let mut request = client.get(events_url(edge, &[]));
    if let Some(origin) = origin {
        request = request.header("origin", HeaderValue::from_bytes(origin).unwrap());
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn bearer(user: &str) -> String {
    format!("Bearer {}", Claims::new(user).hs256(SECRET))
}

/// The CORS headers of an answer, by name.
fn cors(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("access-control-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect()
}

fn named_back(origin: &str) -> Vec<(String, String)> {
    vec![
        ("access-control-allow-origin".into(), origin.into()),
        ("access-control-allow-credentials".into(), "true".into()),
    ]
}

async fn opened(edge: &Running) -> f64 {
    edge.metric("herald_edge_connects_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_is_named_back_on_every_path() {
    let s = stack(&format!("https://app.example.com, {APP}")).await;
    let http1 = Client::new();
    let auth = bearer("alice");

    // The edge's own HTTP/1.1 stream path (`connection: close` tells it).
    let response = connect(
        &http1,
        s.edge(),
        Some(APP.as_bytes()),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["connection"],
        "close",
        "the edge's own path"
    );
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(cors(response.headers()), named_back(APP));
    assert_eq!(response.headers()["vary"], "origin");
    drop(response);

    // HTTP/2, and a refusal (still readable by the page: its CORS headers).
    for (token, status) in [(auth.as_str(), 200), ("Bearer nope", 401)] {
        let response = connect(
            &h2(),
            s.edge(),
            Some(APP.as_bytes()),
            &[("authorization", token)],
        )
        .await;
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), status);
        assert_eq!(cors(response.headers()), named_back(APP));
        assert_eq!(response.headers()["vary"], "origin");
    }

    // hyper's HTTP/1.1: the script, cached per origin.
    let script = http1
        .get(format!("{}/herald.js", s.edge().url()))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        cors(script.headers()),
        named_back("https://app.example.com")
    );
    assert_eq!(script.headers()["vary"], "origin");
    let plain = http1
        .get(format!("{}/herald.js", s.edge().url()))
        .send()
        .await
        .unwrap();
    assert_eq!(cors(plain.headers()), vec![]);
    assert_eq!(
        plain.headers()["vary"],
        "origin",
        "caches must not serve it to pages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_allows_the_reconnect_headers_for_listed_origins_only() {
    let s = stack(APP).await;
    for client in [Client::new(), h2()] {
        let preflight = |origin: &'static str| {
            client
                .request(reqwest::Method::OPTIONS, events_url(s.edge(), &[]))
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "last-event-id")
                .send()
        };
        let allowed = preflight(APP).await.unwrap();
        assert_eq!(allowed.status(), 204);
        let headers = allowed.headers();
        assert_eq!(headers["access-control-allow-origin"], APP);
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(headers["access-control-allow-methods"], "GET");
        let names = headers["access-control-allow-headers"].to_str().unwrap();
        assert!(
            names.contains("last-event-id") && names.contains("authorization"),
            "{names}"
        );
        assert_eq!(headers["access-control-max-age"], "7200");
        assert_eq!(headers["vary"], "origin");

        let refused = preflight("http://evil.test").await.unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(cors(refused.headers()), vec![]);
    }
    let plain = Client::new()
        .request(reqwest::Method::OPTIONS, events_url(s.edge(), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 204);
    assert_eq!(plain.headers()["allow"], "GET, OPTIONS");
    assert_eq!(cors(plain.headers()), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_and_hostile_origins_get_no_headers_and_no_stream() {
    let s = stack(APP).await;
    let auth = bearer("alice");
    let long = format!("http://{}.test", "a".repeat(10_000));
    let hostile: [&[u8]; 8] = [
        b"http://evil.test",
        b"http://app.test:3000.evil.test",
        b"https://app.test:3000",
        b"http://APP.test:3000",
        b"null",
        b"",
        b"garbage \xff\xfe \t;",
        long.as_bytes(),
    ];
    for origin in hostile {
        for client in [Client::new(), h2()] {
            let response =
                connect(&client, s.edge(), Some(origin), &[("authorization", &auth)]).await;
            let shown = String::from_utf8_lossy(&origin[..origin.len().min(40)]).into_owned();
            assert_eq!(response.status(), 403, "{shown}");
            assert_eq!(cors(response.headers()), vec![], "{shown}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "origin_not_allowed", "{shown}");
        }
    }
    let refused = s
        .edge()
        .metric("herald_edge_rejects_total{reason=\"origin_not_allowed\"}")
        .await;
    assert_eq!(refused, 16.0);
    assert_eq!(opened(s.edge()).await, 0.0, "no stream was opened for them");

    // Without `Origin` (curl, a server) or with the edge's own, as before.
    let own = format!("http://{}", s.edge().addr);
    for origin in [None, Some(own.as_bytes())] {
        let response = connect(
            &Client::new(),
            s.edge(),
            origin,
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(cors(response.headers()), vec![]);
    }
    assert_eq!(opened(s.edge()).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_only_the_edges_own_pages_get_streams() {
    let s = Stack::start(edge_config("edge")).await;
    let auth = bearer("alice");
    let other = connect(
        &Client::new(),
        s.edge(),
        Some(APP.as_bytes()),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(other.status(), 403);
    assert_eq!(cors(other.headers()), vec![]);
    assert!(!other.headers().contains_key("vary"));
    let own = format!("http://{}", s.edge().addr);
    let response = connect(
        &Client::new(),
        s.edge(),
        Some(own.as_bytes()),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(cors(response.headers()), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_answers_star_never_credentials_and_reads_no_cookie() {
    let s = stack("*").await;
    let token = Claims::new("alice").hs256(SECRET);
    let cookie = format!("herald_token={token}");
    let star = vec![("access-control-allow-origin".to_owned(), "*".to_owned())];

    // A token in the query works from any page, even `null`'s.
    for origin in [&b"http://anyone.test"[..], b"null"] {
        let url = format!("{}/v1/events?access_token={token}", s.edge().url());
        let response = Client::new()
            .get(url)
            .header("origin", HeaderValue::from_bytes(origin).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(cors(response.headers()), star);
    }
    // A cookie sent cross-origin is not read: the browser would drop the
    // answer anyway, since `*` never allows credentials.
    let response = connect(
        &h2(),
        s.edge(),
        Some(b"http://anyone.test"),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(response.status(), 401);
    assert_eq!(cors(response.headers()), star);
    // Without `Origin` (or from the edge's own pages) it is.
    let response = connect(&Client::new(), s.edge(), None, &[("cookie", &cookie)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(cors(response.headers()), star);

    let preflight = Client::new()
        .request(reqwest::Method::OPTIONS, events_url(s.edge(), &[]))
        .header("origin", "http://anyone.test")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-credentials")
    );
}
