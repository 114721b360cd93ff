//! [`Stack`]: the whole system an end-to-end test runs, started in one call.
//!
//! ```ignore
//! // NATS, herald-publish and one edge (the common case):
//! let stack = Stack::start(edge_config("edge")).await;
//! // Anything else through the builder, services started in the order given:
//! let stack = Stack::builder()
//!     .cluster(3)
//!     .publish(publish_config()).on(0)
//!     .edge(edge_config("edge-1")).on(1)
//!     .edge(edge_config("edge-2")).on(2)
//!     .start()
//!     .await;
//! ```

use herald_nats::connection::NatsSecurity;
use herald_proto::v1::publisher_client::PublisherClient;
use herald_testing::{NatsCluster, NatsServer};
use tonic::transport::Channel;

use crate::{
    Running, publisher, start_edge_as, start_presence_as, start_publish_as, start_push_as,
};

/// A Herald service, e.g. to choose the NATS user it logs in as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Publish,
    Edge,
    Presence,
    Push,
}

/// NATS and the services a test asked for, each running in this process
/// on port 0. NATS is killed when the stack is dropped; the services end
/// with the test's runtime, or earlier by [`Running::stop`]
/// (`stack.edges.remove(0).stop().await`).
///
/// The accessors ([`Stack::edge`], [`Stack::publish`], …) borrow the
/// whole stack; a test that kills or restarts NATS nodes while it holds a
/// service binds the fields instead (`let edge = &stack.edges[0];` beside
/// `stack.nats.nodes[0].kill()`), which Rust sees as separate borrows.
pub struct Stack {
    /// The NATS servers: one node, or the routed cluster
    /// [`StackBuilder::cluster`] asked for (kill, restart, monitor them here).
    pub nats: NatsCluster,
    /// herald-publish, if the test asked for it.
    pub publish: Option<Running>,
    /// The edges, in the order they were added.
    pub edges: Vec<Running>,
    /// herald-presence replicas, in the order they were added.
    pub presences: Vec<Running>,
    /// The push worker, if the test asked for it.
    pub push: Option<Running>,
}

impl Stack {
    /// One NATS node, herald-publish ([`publish_config`]) and one edge with
    /// `edge`: what most tests need.
    pub async fn start(edge: herald_edge::Config) -> Self {
        Self::builder()
            .publish(publish_config())
            .edge(edge)
            .start()
            .await
    }

    /// A stack of one NATS node and no services yet.
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// The NATS node of a single-node stack (node `n1` of a cluster).
    pub fn nats(&self) -> &NatsServer {
        &self.nats.nodes[0]
    }

    /// Every node's client URL, comma-separated, as `--nats-url` takes
    /// them: for services a test starts later (`start_edge(&stack.nats_url(), …)`).
    pub fn nats_url(&self) -> String {
        self.nats.client_urls()
    }

    /// herald-publish; panics if the stack has none.
    pub fn publish(&self) -> &Running {
        self.publish.as_ref().expect("a stack with herald-publish")
    }

    /// The first edge; panics if the stack has none.
    pub fn edge(&self) -> &Running {
        self.edges.first().expect("a stack with an edge")
    }

    /// The first herald-presence replica; panics if the stack has none.
    pub fn presence(&self) -> &Running {
        self.presences
            .first()
            .expect("a stack with herald-presence")
    }

    /// The push worker; panics if the stack has none.
    pub fn push(&self) -> &Running {
        self.push.as_ref().expect("a stack with the push worker")
    }

    /// A Publisher client of herald-publish.
    pub async fn publisher(&self) -> PublisherClient<Channel> {
        publisher(self.publish()).await
    }
}

/// herald-publish's config with test defaults (node `p`).
pub fn publish_config() -> herald_publish::Config {
    herald_publish::Config::defaults("p")
}

/// One service of a stack to start, and where it connects.
enum Part {
    Publish(Box<herald_publish::Config>),
    Edge(Box<herald_edge::Config>),
    Presence(herald_presence::Config),
    Push(Box<herald_push::Config>),
}

/// What [`Stack::builder`] starts: NATS first, then the services in the
/// order they were added.
pub struct StackBuilder {
    nodes: usize,
    nats_config: String,
    files: Vec<(String, String)>,
    env: Vec<(String, String)>,
    login: Box<dyn Fn(Service) -> NatsSecurity>,
    /// Each service with the node it connects to (`None`: every node).
    parts: Vec<(Part, Option<usize>)>,
}

impl Default for StackBuilder {
    fn default() -> Self {
        Self {
            nodes: 1,
            nats_config: String::new(),
            files: Vec::new(),
            env: Vec::new(),
            login: Box::new(|_| NatsSecurity::default()),
            parts: Vec::new(),
        }
    }
}

impl StackBuilder {
    /// A cluster of `nodes` routed NATS nodes (`n1`, `n2`, …) with
    /// JetStream ready to place replicated streams, instead of one node.
    pub fn cluster(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// `extra` configuration on every NATS node (a `tls { … }` block,
    /// `lame_duck_grace_period`, `include ./auth.conf`).
    pub fn nats_config(mut self, extra: &str) -> Self {
        self.nats_config = extra.to_owned();
        self
    }

    /// Files written beside a single NATS node's config for
    /// [`StackBuilder::nats_config`] to `include`, and the variables they
    /// read from its environment.
    pub fn nats_files(mut self, files: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let owned = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        self.files = owned(files);
        self.env = owned(env);
        self
    }

    /// How each service logs in to NATS (its user, password, TLS);
    /// anonymously unless set.
    pub fn login(mut self, login: impl Fn(Service) -> NatsSecurity + 'static) -> Self {
        self.login = Box::new(login);
        self
    }

    /// herald-publish with `config`; it waits for its history streams.
    pub fn publish(self, config: herald_publish::Config) -> Self {
        self.part(Part::Publish(Box::new(config)))
    }

    /// An edge with `config`, holding its subscriptions with
    /// [`crate::nats_subscriber`].
    pub fn edge(self, config: herald_edge::Config) -> Self {
        self.part(Part::Edge(Box::new(config)))
    }

    /// A herald-presence replica with `config`.
    pub fn presence(self, config: herald_presence::Config) -> Self {
        self.part(Part::Presence(config))
    }

    /// The push worker with `config` (see [`crate::push_config`]).
    pub fn push(self, config: herald_push::Config) -> Self {
        self.part(Part::Push(Box::new(config)))
    }

    /// The service added last connects to NATS node `node` (0-based) only,
    /// rather than to every node.
    pub fn on(mut self, node: usize) -> Self {
        let (_, at) = self.parts.last_mut().expect("a service to place");
        *at = Some(node);
        self
    }

    fn part(mut self, part: Part) -> Self {
        self.parts.push((part, None));
        self
    }

    /// Starts NATS, then each service in the order added; returns once
    /// every one serves.
    pub async fn start(self) -> Stack {
        let nats = self.start_nats().await;
        let mut stack = Stack {
            nats,
            publish: None,
            edges: Vec::new(),
            presences: Vec::new(),
            push: None,
        };
        for (part, at) in self.parts {
            let urls: Vec<String> = match at {
                Some(node) => vec![stack.nats.nodes[node].client_url()],
                None => stack.nats.nodes.iter().map(|n| n.client_url()).collect(),
            };
            match part {
                Part::Publish(config) => {
                    let security = (self.login)(Service::Publish);
                    let running = start_publish_as(&urls, &security, *config).await;
                    assert!(stack.publish.replace(running).is_none(), "one publish");
                }
                Part::Edge(config) => {
                    let security = (self.login)(Service::Edge);
                    stack
                        .edges
                        .push(start_edge_as(&urls, &security, *config).await);
                }
                Part::Presence(config) => {
                    let security = (self.login)(Service::Presence);
                    stack
                        .presences
                        .push(start_presence_as(&urls, &security, config).await);
                }
                Part::Push(config) => {
                    let security = (self.login)(Service::Push);
                    let running = start_push_as(&urls, &security, *config).await;
                    assert!(stack.push.replace(running).is_none(), "one push worker");
                }
            }
        }
        stack
    }

    async fn start_nats(&self) -> NatsCluster {
        if self.nodes > 1 {
            assert!(self.files.is_empty(), "files beside a single node only");
            return NatsCluster::start_with(self.nodes, &self.nats_config).await;
        }
        let (files, env) = (pairs(&self.files), pairs(&self.env));
        let node = NatsServer::start_with_files(&self.nats_config, &files, &env);
        NatsCluster { nodes: vec![node] }
    }
}

/// Owned pairs as the borrowed ones herald-testing takes.
fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}
