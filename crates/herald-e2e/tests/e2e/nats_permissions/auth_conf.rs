//! What each Herald service may do on NATS, as data named after the code's
//! own constants, and its rendering as nats-server configuration: the
//! checked-in deploy/nats/auth.conf and its Kubernetes ConfigMap.

use herald_domain::control::{
    CONTROL_WILDCARD, FOLLOWS_BUCKET, LIFECYCLE_WILDCARD, REVOCATIONS_BUCKET,
};
use herald_domain::presence::wire::{
    NODE_WILDCARD, QUERY_SUBJECT, QUEUE_GROUP, SNAPSHOT_PREFIX, STATS_SUBJECT, SYNC_SUBJECT,
};
use herald_domain::region::Region;
use herald_domain::subject::{TOPIC_PREFIX, USER_PREFIX};
use herald_nats::connection::inbox_prefix;
use herald_nats::history::{MAX_SHARDS, stream_name};
use herald_nats::offline;
use herald_push::devices::BUCKET;
use herald_push::worker::CONSUMER;

/// Subjects allowed for one reason, as the file's lines list them.
pub(super) struct Rule {
    pub why: &'static str,
    pub lines: Vec<Vec<String>>,
}

/// One NATS user: a service, or the callers of presence.
pub(super) struct User {
    /// The user name, and the first word of the service's connection name
    /// (which names its inbox prefix).
    pub name: &'static str,
    /// The environment variable nats-server reads its password from.
    pub password: &'static str,
    /// The configuration variable holding its permissions.
    pub block: &'static str,
    pub role: &'static str,
    pub publish: Vec<Rule>,
    pub subscribe: Vec<Rule>,
    /// May answer requests it receives (one reply each).
    pub allow_responses: bool,
}

pub(super) const EDGE: &str = "herald-edge";
pub(super) const PUBLISH: &str = "herald-publish";
pub(super) const PRESENCE: &str = "herald-presence";
pub(super) const PUSH: &str = "herald-push-worker";
pub(super) const CLIENT: &str = "herald-client";

/// One subject a line.
fn rule(why: &'static str, subjects: &[&str]) -> Rule {
    Rule {
        why,
        lines: subjects.iter().map(|s| vec![(*s).to_owned()]).collect(),
    }
}

/// `$JS.API.<api>.<name>` for each of `apis`, one line per name.
fn api(why: &'static str, apis: &[&str], names: &[String]) -> Rule {
    let line = |name: &String| {
        apis.iter()
            .map(|api| format!("$JS.API.{api}.{name}"))
            .collect()
    };
    Rule {
        why,
        lines: names.iter().map(line).collect(),
    }
}

/// Where a deployment's regions put their streams and subjects: one
/// unnamed region (deploy/nats/auth.conf), or named ones (a supercluster:
/// deploy/k8s/overlays/regions).
pub(super) struct Regions(pub Vec<Region>);

impl Regions {
    /// A deployment of one region.
    pub(super) fn one() -> Self {
        Self(vec![Region::default()])
    }

    /// Every history stream `--history-shards` may name, in every region.
    fn history(&self) -> Vec<String> {
        let names = |r: &Region| {
            (0..MAX_SHARDS)
                .map(|n| stream_name(r, n))
                .collect::<Vec<_>>()
        };
        self.0.iter().flat_map(names).collect()
    }

    /// Every region's offline queue.
    fn offline(&self) -> Vec<String> {
        self.0.iter().map(offline::stream_name).collect()
    }

    /// `subject` and what follows it, as each region's subjects end.
    fn wildcard(&self, prefix: &str) -> String {
        match self.0[0].is_unnamed() {
            true => format!("{prefix}*"),
            false => format!("{prefix}*.*"),
        }
    }

    /// The stored subjects of history.
    fn stored(&self) -> String {
        self.wildcard("herald.h.*.*.")
    }
}

/// The control plane's buckets (revocations, follows).
const CONTROL_BUCKETS: [&str; 2] = [REVOCATIONS_BUCKET, FOLLOWS_BUCKET];

/// The stream behind a key-value bucket.
fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Each control bucket's subjects, as `line` makes them: one line each.
fn per_bucket(why: &'static str, line: impl Fn(&str, &str) -> Vec<String>) -> Rule {
    Rule {
        why,
        lines: CONTROL_BUCKETS
            .iter()
            .map(|bucket| line(bucket, &kv_stream(bucket)))
            .collect(),
    }
}

fn wildcard(prefix: &str) -> String {
    format!("{prefix}*")
}

fn inbox(user: &str) -> String {
    format!("{}.>", inbox_prefix(user))
}

fn edge(regions: &Regions) -> User {
    User {
        name: EDGE,
        password: "HERALD_EDGE_NATS_PASSWORD",
        block: "EDGE",
        role: "SSE edges: follow users and topics, read history to resume, report presence",
        publish: vec![
            rule(
                "its presence (deltas, heartbeats) and snapshots for followers",
                &[NODE_WILDCARD, &wildcard(SNAPSHOT_PREFIX)],
            ),
            rule(
                "round trips after subscribing (a subject nobody serves)",
                &["_herald.ping.*"],
            ),
            rule(
                "streams' connects and disconnects (--lifecycle-events)",
                &[LIFECYCLE_WILDCARD],
            ),
            api(
                "resume: read history (direct and leader gets, stream info); no writes",
                &["DIRECT.GET", "STREAM.MSG.GET", "STREAM.INFO"],
                &regions.history(),
            ),
            api(
                "resume: a subject's newest event (direct get by subject)",
                &["DIRECT.GET"],
                &regions
                    .history()
                    .iter()
                    .map(|s| format!("{s}.>"))
                    .collect::<Vec<_>>(),
            ),
            per_bucket(
                "follow the control buckets: stream info, an ordered consumer \
                 (create, delete when it restarts, flow control); no writes",
                |_, stream| {
                    vec![
                        format!("$JS.API.STREAM.INFO.{stream}"),
                        format!("$JS.API.CONSUMER.CREATE.{stream}"),
                        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
                        format!("$JS.FC.{stream}.>"),
                    ]
                },
            ),
        ],
        subscribe: vec![
            rule(
                "live events of the users and topics it serves",
                &[
                    &regions.wildcard(USER_PREFIX),
                    &regions.wildcard(TOPIC_PREFIX),
                ],
            ),
            rule("followers' snapshot requests", &[SYNC_SUBJECT]),
            rule(
                "herald-publish's control orders (answered as responses)",
                &[CONTROL_WILDCARD],
            ),
            rule(
                "its replies, and the control buckets' entries",
                &[&inbox(EDGE)],
            ),
        ],
        allow_responses: true,
    }
}

fn publish(regions: &Regions) -> User {
    User {
        name: PUBLISH,
        password: "HERALD_PUBLISH_NATS_PASSWORD",
        block: "PUBLISH",
        role: "the Publish API: store and send events, queue them for mobile push",
        publish: vec![
            rule("store events in history", &[&regions.stored()]),
            rule(
                "ephemeral events, on the live subjects",
                &[
                    &regions.wildcard(USER_PREFIX),
                    &regions.wildcard(TOPIC_PREFIX),
                ],
            ),
            rule(
                "the offline queue (FALLBACK)",
                &[&regions.wildcard(offline::PREFIX)],
            ),
            rule("ask edges for presence snapshots", &[SYNC_SUBJECT]),
            rule(
                "control orders to every edge (answers on its inbox)",
                &[CONTROL_WILDCARD],
            ),
            api(
                "check (against its flags), create or update the history streams, the offline queue and the control buckets",
                &["STREAM.INFO", "STREAM.CREATE", "STREAM.UPDATE"],
                &[
                    regions.history(),
                    regions.offline(),
                    CONTROL_BUCKETS.map(kv_stream).to_vec(),
                ]
                .concat(),
            ),
            Rule {
                why: "Control.History: a short-lived filtered consumer (create, pull, delete)",
                lines: regions
                    .history()
                    .iter()
                    .map(|s| {
                        vec![
                            format!("$JS.API.CONSUMER.CREATE.{s}"),
                            format!("$JS.API.CONSUMER.CREATE.{s}.>"),
                            format!("$JS.API.CONSUMER.MSG.NEXT.{s}.*"),
                            format!("$JS.API.CONSUMER.DELETE.{s}.*"),
                        ]
                    })
                    .collect(),
            },
            per_bucket(
                "open the control buckets, read an entry, change it (compare-and-set)",
                |bucket, stream| {
                    vec![
                        format!("$JS.API.DIRECT.GET.{stream}.$KV.{bucket}.*"),
                        format!("$KV.{bucket}.*"),
                    ]
                },
            ),
        ],
        subscribe: vec![
            rule(
                "presence, for receipts",
                &[NODE_WILDCARD, &wildcard(SNAPSHOT_PREFIX)],
            ),
            rule(
                "its replies and publish acknowledgements",
                &[&inbox(PUBLISH)],
            ),
        ],
        allow_responses: false,
    }
}

fn presence() -> User {
    let queued = |subject: &str| format!("{subject} {QUEUE_GROUP}");
    User {
        name: PRESENCE,
        password: "HERALD_PRESENCE_NATS_PASSWORD",
        block: "PRESENCE",
        role: "the presence service: follow the edges, answer queries",
        publish: vec![rule("ask edges for presence snapshots", &[SYNC_SUBJECT])],
        subscribe: vec![
            rule(
                "the edges' presence and snapshots",
                &[NODE_WILDCARD, &wildcard(SNAPSHOT_PREFIX)],
            ),
            rule(
                "queries, in the replicas' queue group (answered as responses)",
                &[&queued(QUERY_SUBJECT), &queued(STATS_SUBJECT)],
            ),
        ],
        allow_responses: true,
    }
}

fn push(regions: &Regions) -> User {
    let bucket = format!("KV_{BUCKET}");
    let consumer = |queue: &String| {
        vec![
            format!("$JS.API.STREAM.INFO.{queue}"),
            format!("$JS.API.CONSUMER.INFO.{queue}.{CONSUMER}"),
            format!("$JS.API.CONSUMER.CREATE.{queue}.{CONSUMER}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{queue}.{CONSUMER}"),
            format!("$JS.ACK.{queue}.{CONSUMER}.>"),
        ]
    };
    User {
        name: PUSH,
        password: "HERALD_PUSH_NATS_PASSWORD",
        block: "PUSH_WORKER",
        role: "the mobile-push worker: consume the offline queue, keep device tokens",
        publish: vec![
            Rule {
                why: "its durable consumer on the offline queue: find, create, pull, acknowledge",
                lines: regions
                    .offline()
                    .iter()
                    .flat_map(consumer)
                    .map(|line| vec![line])
                    .collect(),
            },
            rule(
                "open or create the device bucket (account limits, stream info, create)",
                &[
                    "$JS.API.INFO",
                    &format!("$JS.API.STREAM.INFO.{bucket}"),
                    &format!("$JS.API.STREAM.CREATE.{bucket}"),
                ],
            ),
            rule(
                "read and write a user's devices",
                &[
                    &format!("$JS.API.DIRECT.GET.{bucket}.$KV.{BUCKET}.*"),
                    &format!("$KV.{BUCKET}.*"),
                ],
            ),
        ],
        subscribe: vec![rule("its replies and pulled events", &[&inbox(PUSH)])],
        allow_responses: false,
    }
}

fn client() -> User {
    User {
        name: CLIENT,
        password: "HERALD_CLIENT_NATS_PASSWORD",
        block: "CLIENT",
        role: "your services that ask presence over NATS (request/reply) or follow lifecycle events",
        publish: vec![rule("presence queries", &[QUERY_SUBJECT, STATS_SUBJECT])],
        subscribe: vec![
            rule("the replies (default inbox)", &["_INBOX.>"]),
            rule(
                "streams' connects and disconnects (`herald lifecycle`)",
                &[LIFECYCLE_WILDCARD],
            ),
        ],
        allow_responses: false,
    }
}

/// Every user, in the order the file lists them.
pub(super) fn users(regions: &Regions) -> Vec<User> {
    vec![
        edge(regions),
        publish(regions),
        presence(),
        push(regions),
        client(),
    ]
}

const HEADER: &str = "\
# NATS users for Herald: one per service, each allowed only what it does
# (docs/operations.md has the table). Included by deploy/nats/nats.conf
# (docker compose) and, as the ConfigMap nats-auth, by the Kubernetes pods.
#
# GENERATED from crates/herald-e2e/tests/e2e/nats_permissions/auth_conf.rs; its
# test runs every service against a nats-server loading this very file.
# Change the permissions there, then regenerate:
#   HERALD_REGENERATE=1 cargo test -p herald-e2e --test e2e nats_permissions::
#
# Passwords come from nats-server's environment; a missing one stops the
# server. nats-server parses the value, so use letters and digits starting
# with a letter (`123` or `1e5x` are not strings), e.g.
#   echo \"h$(openssl rand -hex 24)\"
# A service takes its replies on `_INBOX_<service>.>`, so none can read
# another's. No user is default: an anonymous client is refused.
";

/// deploy/nats/auth.conf (one region), or its supercluster form.
pub(super) fn render(regions: &Regions) -> String {
    let users = users(regions);
    let mut out = String::from(HEADER);
    out.push_str("authorization {\n");
    for user in &users {
        out.push_str(&format!("  # {}: {}\n", user.name, user.role));
        out.push_str(&format!("  {} = {{\n", user.block));
        render_rules(&mut out, "publish", &user.publish);
        render_rules(&mut out, "subscribe", &user.subscribe);
        if user.allow_responses {
            out.push_str("    allow_responses: true\n");
        }
        out.push_str("  }\n");
    }
    out.push_str("  users: [\n");
    for user in &users {
        out.push_str(&format!(
            "    {{ user: {}, password: ${}, permissions: ${} }}\n",
            user.name, user.password, user.block
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

fn render_rules(out: &mut String, direction: &str, rules: &[Rule]) {
    out.push_str(&format!("    {direction}: {{\n      allow: [\n"));
    for rule in rules {
        out.push_str(&format!("        # {}\n", rule.why));
        for line in &rule.lines {
            let quoted: Vec<String> = line.iter().map(|s| format!("\"{s}\"")).collect();
            out.push_str(&format!("        {}\n", quoted.join(", ")));
        }
    }
    out.push_str("      ]\n    }\n");
}

/// deploy/k8s/base/nats-auth.yaml: the same file as a ConfigMap.
pub(super) fn config_map(auth_conf: &str) -> String {
    let mut out = String::from(
        "# An auth.conf for the NATS pods (GENERATED with deploy/nats/auth.conf; see there).\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nats-auth\n  namespace: herald\n\
         data:\n  auth.conf: |\n",
    );
    for line in auth_conf.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}
