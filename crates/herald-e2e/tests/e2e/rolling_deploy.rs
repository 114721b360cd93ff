//! Deploys as they happen in production: the project's own
//! deploy/nginx/nginx.conf (only its addresses changed) in front of two
//! edge processes, 40 real EventSources following one topic (35 from npm's
//! `eventsource` in Node, and in headless Chromium 3 through /herald.js and
//! 2 plain `EventSource`s), persisted events published all along. Edges are
//! restarted (SIGTERM, drain, start again), killed, left full, or lose
//! their NATS node: every client must end with every event exactly once,
//! in order, and none may be left closed for good.

use std::net::SocketAddr;
use std::time::Duration;

use herald_e2e::*;
use herald_proto::v1::publisher_client::PublisherClient;
use herald_proto::v1::{PublishRequest, publish_request::Target};
use herald_testing::browser::Browser;
use herald_testing::eventsource::EventSources;
use herald_testing::eventually;
use herald_testing::nginx::Nginx;
use herald_testing::token::{Claims, Sign};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "deploys";
const NODE_CLIENTS: usize = 35;
/// Streams in the one Chromium page: Chromium opens at most 6 HTTP/1.1
/// connections to one host, and the page needs one to load /herald.js.
const HERALD_JS_CLIENTS: usize = 3;
const PLAIN_BROWSER_CLIENTS: usize = 2;
/// Between persisted publishes (~50 events/s).
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(30);

/// Two edges behind nginx, each on its own NATS URL.
struct Deployment {
    edges: Vec<Option<EdgeProcess>>,
    specs: Vec<EdgeSpec>,
    nginx: Nginx,
    front: SocketAddr,
}

/// Where an edge listens, its NATS URL and extra flags: what a restart
/// starts again.
struct EdgeSpec {
    addr: SocketAddr,
    nats_url: String,
    flags: Vec<String>,
}

impl EdgeSpec {
    async fn start(&self) -> EdgeProcess {
        let mut flags = vec!["--drain-window", "3s", "--drain-grace", "10s"];
        flags.extend(self.flags.iter().map(String::as_str));
        EdgeProcess::start_with(&self.nats_url, Some(self.addr), &flags).await
    }
}

impl Deployment {
    /// Starts one edge per entry of `edges` (its NATS URL and extra flags)
    /// and nginx in front of them.
    async fn start(edges: &[(String, &[&str])]) -> Self {
        let specs: Vec<EdgeSpec> = edges
            .iter()
            .map(|(nats_url, flags)| EdgeSpec {
                addr: free_addr(),
                nats_url: nats_url.clone(),
                flags: flags.iter().map(|f| f.to_string()).collect(),
            })
            .collect();
        let mut running = Vec::new();
        for spec in &specs {
            running.push(Some(spec.start().await));
        }
        let front = free_addr();
        let addrs: Vec<SocketAddr> = specs.iter().map(|s| s.addr).collect();
        let nginx = Nginx::start(&nginx_config(front, &addrs), front).await;
        Self {
            edges: running,
            specs,
            nginx,
            front,
        }
    }

    /// SIGTERM, wait for the drain to end, start again: one step of a
    /// rolling restart.
    async fn restart(&mut self, i: usize) {
        let mut edge = self.edges[i].take().unwrap();
        edge.terminate(Duration::from_secs(15)).await;
        self.edges[i] = Some(self.specs[i].start().await);
    }

    /// SIGKILL, then start again, as an orchestrator replaces a crashed pod.
    async fn crash(&mut self, i: usize) {
        self.edges[i].take().unwrap().kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.edges[i] = Some(self.specs[i].start().await);
    }

    /// One sample of edge `i`'s metrics; 0 if absent.
    async fn metric(&self, i: usize, sample: &str) -> f64 {
        metric_at(self.edges[i].as_ref().unwrap().process().admin, sample).await
    }

    fn url(&self) -> String {
        format!("http://{}", self.front)
    }
}

/// deploy/nginx/nginx.conf with only its addresses changed: where it
/// listens and where the edges are.
fn nginx_config(front: SocketAddr, edges: &[SocketAddr]) -> String {
    let config = include_str!("../../../../deploy/nginx/nginx.conf");
    let mut substituted = config.to_owned();
    for (from, to) in [
        ("edge-1:8080", edges[0].to_string()),
        ("edge-2:8080", edges[1].to_string()),
        ("listen 8080;", format!("listen {front};")),
    ] {
        assert_eq!(config.matches(from).count(), 1, "{from} in nginx.conf");
        substituted = substituted.replace(from, &to);
    }
    substituted
}

fn token(client: usize) -> String {
    Claims::new(format!("user-{client}"))
        .topics(&[TOPIC])
        .hs256(SECRET)
}

/// The 40 clients: Node's and Chromium's.
struct Clients {
    node: EventSources,
    browser: Browser,
}

impl Clients {
    async fn open(deployment: &Deployment) -> Self {
        let urls: Vec<String> = (0..NODE_CLIENTS)
            .map(|c| {
                format!(
                    "{}/v1/events?topic={TOPIC}&access_token={}",
                    deployment.url(),
                    token(c)
                )
            })
            .collect();
        let node = EventSources::open(&urls);
        let browser = browser_clients(deployment).await;
        Self { node, browser }
    }

    /// Waits until every stream is open once.
    async fn all_open(&mut self) {
        let node = &self.node;
        eventually(WAIT, "every Node EventSource to open", || async {
            node.seen().iter().all(|s| s.opens > 0).then_some(())
        })
        .await;
        let open = "window.clients.every((c) => c.state === 'open' || c.readyState === 1)";
        self.browser.wait_for(open, true.into(), WAIT).await;
    }

    /// Every client's event data, Node's first.
    async fn datas(&mut self) -> Vec<Vec<String>> {
        let mut datas: Vec<Vec<String>> = self
            .node
            .seen()
            .into_iter()
            .map(|s| s.events.into_iter().map(|(_, data)| data).collect())
            .collect();
        let browser = self.browser.eval("window.got").await;
        for got in browser.as_array().unwrap() {
            datas.push(
                got.as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap().to_owned())
                    .collect(),
            );
        }
        datas
    }

    /// Waits until every client has `count` events, then checks they are
    /// exactly `0..count` in order and that no client gave up.
    async fn every_event_exactly_once(&mut self, count: usize) {
        let expected: Vec<String> = (0..count).map(|i| i.to_string()).collect();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let datas = self.datas().await;
            if datas.iter().all(|d| d.len() >= count) || std::time::Instant::now() > deadline {
                let node = self.node.seen();
                for (c, got) in datas.iter().enumerate() {
                    let how = node.get(c).map(|s| (s.opens, s.gave_up));
                    assert_eq!(
                        got, &expected,
                        "client {c} (Node: opens, gave up: {how:?}): every event once, in order"
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.none_closed().await;
    }

    async fn none_closed(&mut self) {
        for (c, seen) in self.node.seen().iter().enumerate() {
            assert!(!seen.gave_up, "Node client {c} gave up");
        }
        let states = self.node.states().await;
        assert!(states.iter().all(|&s| s != 2), "Node states {states:?}");
        let states = self.browser.eval("window.states()").await;
        let closed: Vec<&Value> = states
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| *s == "closed" || *s == 2 || *s == "gave up")
            .collect();
        assert!(closed.is_empty(), "browser states {states}");
    }
}

/// One Chromium page on nginx's origin holding the /herald.js clients and
/// the plain EventSources; `window.got[c]` is client `c`'s event data.
async fn browser_clients(deployment: &Deployment) -> Browser {
    let page = format!("{}/herald.js", deployment.url());
    let mut browser = Browser::open(&page).await;
    // Chromium may show about:blank first: wait for the page itself.
    let loaded = format!("location.href === '{page}' && document.readyState === 'complete'");
    browser.wait_for(&loaded, true.into(), WAIT).await;
    let load = "(() => { const s = document.createElement('script'); \
                s.src = '/herald.js'; document.head.appendChild(s); return true; })()";
    assert_eq!(browser.eval(load).await, true);
    browser
        .wait_for("typeof Herald", "function".into(), WAIT)
        .await;
    let tokens: Vec<String> = (0..HERALD_JS_CLIENTS + PLAIN_BROWSER_CLIENTS)
        .map(|c| token(NODE_CLIENTS + c))
        .collect();
    let script = format!(
        r#"(() => {{
          const tokens = {tokens};
          window.got = tokens.map(() => []);
          window.gaveUp = tokens.map(() => false);
          window.clients = tokens.map((token, c) => {{
            const record = (e) => window.got[c].push(e.data);
            if (c < {HERALD_JS_CLIENTS}) {{
              const client = new Herald("/v1/events", {{
                token, topics: ["{TOPIC}"], minDelay: 200, maxDelay: 2000,
              }});
              client.on("message", record);
              return client;
            }}
            const source = new EventSource("/v1/events?topic={TOPIC}&access_token=" + token);
            source.onmessage = record;
            source.onerror = () => {{ if (source.readyState === 2) window.gaveUp[c] = true; }};
            return source;
          }});
          window.states = () => window.clients.map((c, i) =>
            window.gaveUp[i] ? "gave up" : (c.state !== undefined ? c.state : c.readyState));
          return true;
        }})()"#,
        tokens = serde_json::to_string(&tokens).unwrap(),
    );
    assert_eq!(browser.eval(&script).await, true);
    browser
}

/// Publishes persisted events `0, 1, 2, …` to the topic until cancelled,
/// as a careful publisher does: a call that fails (history unavailable
/// while a NATS node restarts) is retried with the same idempotency key,
/// so it is stored once. Returns how many events.
fn publish_continuously(
    publish: &Running,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    let url = publish.url();
    tokio::spawn(async move {
        let mut client = PublisherClient::connect(url).await.unwrap();
        let mut sent = 0;
        while !stop.is_cancelled() {
            let request = PublishRequest {
                target: Some(Target::Topic(TOPIC.to_owned())),
                data: sent.to_string(),
                idempotency_key: format!("event-{sent}"),
                ..Default::default()
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while let Err(status) = client.publish(request.clone()).await {
                assert!(
                    std::time::Instant::now() < deadline,
                    "event {sent} not published: {status}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent += 1;
            tokio::time::sleep(PUBLISH_EVERY).await;
        }
        sent
    })
}

/// Asserts nginx logged requests (so the check below means something)
/// and that no token reached its logs.
fn no_token_logged(nginx: &Nginx) {
    let log = nginx.log();
    assert!(
        log.contains("\"GET /v1/events HTTP/1.1\" 200"),
        "nginx logged no stream:\n{log}"
    );
    assert!(
        !log.contains("access_token"),
        "a token in nginx's log:\n{log}"
    );
    assert!(!log.contains(&token(0)), "a token in nginx's log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_and_a_crash_strand_no_client() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let mut deployment =
        Deployment::start(&[(stack.nats_url(), &[]), (stack.nats_url(), &[])]).await;
    let mut clients = Clients::open(&deployment).await;
    clients.all_open().await;

    let stop = CancellationToken::new();
    let publishing = publish_continuously(publish, stop.clone());
    for _round in 0..2 {
        for edge in 0..2 {
            deployment.restart(edge).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    deployment.crash(0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let sent = publishing.await.unwrap();
    assert!(sent > 500, "only {sent} events published");

    clients.every_event_exactly_once(sent).await;
    no_token_logged(&deployment.nginx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_edge_strands_no_client() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    // Edge 2 holds at most 10 of the 40 streams; while edge 1 restarts,
    // its clients find edge 2 full and must come back until edge 1 is up.
    let full: &[&str] = &["--max-connections", "10"];
    let mut deployment =
        Deployment::start(&[(stack.nats_url(), &[]), (stack.nats_url(), full)]).await;
    let mut clients = Clients::open(&deployment).await;
    clients.all_open().await;

    let stop = CancellationToken::new();
    let publishing = publish_continuously(publish, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    deployment.restart(0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let sent = publishing.await.unwrap();

    clients.every_event_exactly_once(sent).await;
    let full = "herald_edge_rejects_total{reason=\"node_full\"}";
    assert!(
        deployment.metric(1, full).await > 0.0,
        "edge 2 was never full"
    );
    no_token_logged(&deployment.nginx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_under_an_edge_strands_no_client() {
    let mut config = herald_publish::Config::defaults("p");
    config.history.history_replicas = 3;
    let mut stack = Stack::builder()
        .cluster(3)
        .publish(config)
        .on(0)
        .start()
        .await;
    let publish = stack.publish.as_ref().unwrap();
    let replicated: &[&str] = &["--history-replicas", "3"];
    let deployment = Deployment::start(&[
        (stack.nats.nodes[1].client_url(), replicated),
        (stack.nats.nodes[2].client_url(), replicated),
    ])
    .await;
    let mut clients = Clients::open(&deployment).await;
    clients.all_open().await;
    // Live events reach an edge once its node's interest has reached the
    // node that republishes them.
    for (at, peer) in [(0, "n2"), (0, "n3"), (1, "n3"), (2, "n2")] {
        stack
            .nats
            .wait_for_interest(at, peer, &format!("herald.t.{TOPIC}"))
            .await;
    }

    let stop = CancellationToken::new();
    let publishing = publish_continuously(publish, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.nats.nodes[1].restart();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.cancel();
    let sent = publishing.await.unwrap();

    clients.every_event_exactly_once(sent).await;
    // Edge 1 closed its streams when its NATS went away: they moved.
    let lost = "herald_edge_closes_total{reason=\"server_error\"}";
    assert!(deployment.metric(0, lost).await > 0.0, "no stream moved");
    no_token_logged(&deployment.nginx);
}
