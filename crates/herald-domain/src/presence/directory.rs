//! Who is connected where: the state every presence follower keeps, built
//! from the edges' messages (see [`super::wire`]). Pure logic, no I/O: the
//! caller feeds messages and the clock in, and sends the snapshot requests
//! this asks for.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::wire::{NodeMessage, SnapshotPart};

/// A node that has not been heard from for this many of its heartbeat
/// intervals is taken for dead and its connections forgotten.
pub const EXPIRY_INTERVALS: f64 = 2.5;

/// Most deltas kept for a node while its snapshot is on the way; beyond
/// this the snapshot is asked for again.
const MAX_BUFFERED: usize = 10_000;

/// Heartbeat interval assumed until a node announces its own.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// One user's connections across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPresence {
    pub connections: u32,
    /// Nodes holding them, sorted.
    pub nodes: Vec<String>,
    /// The region of each of `nodes` ("" for the unnamed region, or one
    /// not told yet), in the same order.
    pub regions: Vec<String>,
}

/// The cluster as presence sees it.
#[derive(Debug, Default)]
pub struct Directory {
    nodes: HashMap<String, Node>,
    /// user → node → connections: the index lookups read.
    users: HashMap<String, HashMap<String, u32>>,
    connections: u64,
    /// Snapshot parts received so far, per node.
    assembling: HashMap<String, Vec<SnapshotPart>>,
}

#[derive(Debug)]
struct Node {
    /// Its region, as its heartbeats and snapshots say.
    region: String,
    epoch: u64,
    seq: u64,
    users: HashMap<String, u32>,
    connections: u64,
    last_seen: Instant,
    interval: Duration,
    state: SyncState,
}

#[derive(Debug)]
enum SyncState {
    InStep,
    /// A snapshot was asked for at `asked`; deltas wait in `buffered`.
    Waiting {
        asked: Instant,
        buffered: Vec<(u64, Vec<(String, i64)>)>,
    },
}

/// What the caller must do after feeding a message in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Followup {
    Nothing,
    /// Ask this node for a snapshot: presence here may be wrong until it comes.
    AskSnapshot(String),
}

impl Directory {
    /// Applies one message from an edge.
    pub fn on_message(&mut self, message: NodeMessage, now: Instant) -> Followup {
        match message {
            NodeMessage::Leaving { node, epoch } => {
                if self.nodes.get(&node).is_some_and(|n| n.epoch <= epoch) {
                    self.forget(&node);
                }
                Followup::Nothing
            }
            NodeMessage::Delta {
                node,
                epoch,
                seq,
                changes,
                ..
            } => {
                let Some(known) = self.current(&node, epoch) else {
                    return self.meet(node, epoch, now, Some((seq, changes)));
                };
                known.last_seen = now;
                match &mut known.state {
                    SyncState::Waiting { buffered, .. } if buffered.len() < MAX_BUFFERED => {
                        buffered.push((seq, changes));
                        Followup::Nothing
                    }
                    SyncState::Waiting { .. } => self.resync(&node, now),
                    SyncState::InStep if seq <= known.seq => Followup::Nothing,
                    SyncState::InStep if seq == known.seq + 1 => {
                        self.apply(&node, seq, &changes, now)
                    }
                    SyncState::InStep => self.resync_with(&node, now, vec![(seq, changes)]),
                }
            }
            NodeMessage::Heartbeat {
                node,
                region,
                epoch,
                seq,
                interval_ms,
                ..
            } => {
                let Some(known) = self.current(&node, epoch) else {
                    return self.meet(node, epoch, now, None);
                };
                known.last_seen = now;
                known.region = region;
                known.interval = Duration::from_millis(interval_ms.max(1));
                let interval = known.interval;
                match &known.state {
                    SyncState::InStep if seq > known.seq => self.resync(&node, now),
                    // The request or its answer was lost: ask again.
                    SyncState::Waiting { asked, .. } if now.duration_since(*asked) > interval => {
                        self.resync(&node, now)
                    }
                    _ => Followup::Nothing,
                }
            }
        }
    }

    /// Takes one snapshot part; the snapshot applies once all its parts are in.
    pub fn on_snapshot_part(&mut self, part: SnapshotPart, now: Instant) -> Followup {
        if self
            .nodes
            .get(&part.node)
            .is_some_and(|n| n.epoch > part.epoch)
        {
            return Followup::Nothing;
        }
        let node = part.node.clone();
        let parts = self.assembling.entry(node.clone()).or_default();
        // Parts of an older snapshot are replaced by those of a newer one.
        parts.retain(|p| p.epoch == part.epoch && p.seq == part.seq);
        if !parts.iter().any(|p| p.part == part.part) {
            parts.push(part);
        }
        let expected = parts[0].parts as usize;
        if parts.len() < expected {
            return Followup::Nothing;
        }
        let mut parts = self.assembling.remove(&node).expect("present");
        let stale = self.nodes.get(&node).is_some_and(|n| {
            matches!(n.state, SyncState::InStep)
                && n.epoch == parts[0].epoch
                && n.seq >= parts[0].seq
        });
        if stale {
            return Followup::Nothing; // an answer to an earlier request
        }
        parts.sort_by_key(|p| p.part);
        self.install(parts, now)
    }

    /// Forgets nodes not heard from for [`EXPIRY_INTERVALS`] heartbeats;
    /// returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.duration_since(n.last_seen) > n.interval.mul_f64(EXPIRY_INTERVALS))
            .map(|(name, _)| name.clone())
            .collect();
        for node in &dead {
            self.forget(node);
        }
        dead
    }

    /// Marks every node as possibly stale (our own connection dropped):
    /// each needs a fresh snapshot.
    pub fn distrust_all(&mut self, now: Instant) {
        for node in self.nodes.values_mut() {
            if matches!(node.state, SyncState::InStep) {
                node.state = SyncState::Waiting {
                    asked: now,
                    buffered: Vec::new(),
                };
            }
        }
    }

    pub fn lookup(&self, user: &str) -> UserPresence {
        let Some(nodes) = self.users.get(user) else {
            return UserPresence::default();
        };
        let mut names: Vec<String> = nodes.keys().cloned().collect();
        names.sort();
        let region = |node: &String| self.nodes.get(node).map(|n| n.region.clone());
        UserPresence {
            connections: nodes.values().sum(),
            regions: names
                .iter()
                .map(|n| region(n).unwrap_or_default())
                .collect(),
            nodes: names,
        }
    }

    /// The user's connections on each node holding some, by node name.
    pub fn user_nodes(&self, user: &str) -> Vec<(String, u32)> {
        let Some(nodes) = self.users.get(user) else {
            return Vec::new();
        };
        let mut nodes: Vec<(String, u32)> = nodes.iter().map(|(n, c)| (n.clone(), *c)).collect();
        nodes.sort();
        nodes
    }

    pub fn is_online(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Open connections in the cluster.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Users with at least one connection.
    pub fn users_online(&self) -> u64 {
        self.users.len() as u64
    }

    /// Connections per known node.
    pub fn node_connections(&self) -> impl Iterator<Item = (&str, u64)> {
        self.nodes.iter().map(|(k, n)| (k.as_str(), n.connections))
    }

    /// Every user → connections, for comparing against the truth.
    pub fn counts(&self) -> HashMap<String, u32> {
        self.users
            .iter()
            .map(|(user, nodes)| (user.clone(), nodes.values().sum()))
            .collect()
    }

    /// Nodes whose snapshot has not arrived yet.
    pub fn waiting(&self) -> usize {
        let waiting = |n: &&Node| matches!(n.state, SyncState::Waiting { .. });
        self.nodes.values().filter(waiting).count()
    }

    /// The node if `epoch` is its current one; a newer epoch (the edge
    /// restarted) wipes it and returns `None`, as do an older epoch and an
    /// unknown node.
    fn current(&mut self, node: &str, epoch: u64) -> Option<&mut Node> {
        let known = self.nodes.get(node)?;
        if epoch > known.epoch {
            self.forget(node);
            return None;
        }
        if epoch < known.epoch {
            return None; // a late message from a previous run
        }
        self.nodes.get_mut(node)
    }

    /// A node seen for the first time (or with a new epoch): keep what it
    /// said and ask for its snapshot.
    fn meet(
        &mut self,
        node: String,
        epoch: u64,
        now: Instant,
        delta: Option<(u64, Vec<(String, i64)>)>,
    ) -> Followup {
        if self.nodes.get(&node).is_some_and(|n| n.epoch > epoch) {
            return Followup::Nothing; // a late message from a previous run
        }
        self.nodes.insert(
            node.clone(),
            Node {
                region: String::new(),
                epoch,
                seq: 0,
                users: HashMap::new(),
                connections: 0,
                last_seen: now,
                interval: DEFAULT_INTERVAL,
                state: SyncState::Waiting {
                    asked: now,
                    buffered: delta.into_iter().collect(),
                },
            },
        );
        Followup::AskSnapshot(node)
    }

    fn resync(&mut self, node: &str, now: Instant) -> Followup {
        self.resync_with(node, now, Vec::new())
    }

    fn resync_with(
        &mut self,
        node: &str,
        now: Instant,
        buffered: Vec<(u64, Vec<(String, i64)>)>,
    ) -> Followup {
        if let Some(known) = self.nodes.get_mut(node) {
            known.state = SyncState::Waiting {
                asked: now,
                buffered,
            };
        }
        Followup::AskSnapshot(node.to_owned())
    }

    /// Applies delta `seq` of an in-step node.
    fn apply(&mut self, node: &str, seq: u64, changes: &[(String, i64)], now: Instant) -> Followup {
        for (user, change) in changes {
            if !self.change(node, user, *change) {
                // Counts would go negative: we are out of step with the edge.
                return self.resync(node, now);
            }
        }
        if let Some(known) = self.nodes.get_mut(node) {
            known.seq = seq;
        }
        Followup::Nothing
    }

    /// Adds `change` to `user`'s count on `node`; false if it would go negative.
    fn change(&mut self, node: &str, user: &str, change: i64) -> bool {
        let Some(known) = self.nodes.get_mut(node) else {
            return false;
        };
        let before = i64::from(known.users.get(user).copied().unwrap_or(0));
        let Ok(after) = u32::try_from(before + change) else {
            return false;
        };
        known.connections = (known.connections as i64 + change) as u64;
        self.connections = (self.connections as i64 + change) as u64;
        let index = self.users.entry(user.to_owned()).or_default();
        if after == 0 {
            known.users.remove(user);
            index.remove(node);
            if index.is_empty() {
                self.users.remove(user);
            }
        } else {
            known.users.insert(user.to_owned(), after);
            index.insert(node.to_owned(), after);
        }
        true
    }

    /// Replaces a node's state with a complete snapshot, then applies the
    /// deltas that came after it.
    fn install(&mut self, parts: Vec<SnapshotPart>, now: Instant) -> Followup {
        let first = &parts[0];
        let (name, epoch, seq) = (first.node.clone(), first.epoch, first.seq);
        let region = first.region.clone();
        let interval = Duration::from_millis(first.interval_ms.max(1));
        let buffered = match self.nodes.get_mut(&name) {
            Some(Node {
                state: SyncState::Waiting { buffered, .. },
                epoch: known,
                ..
            }) if *known == epoch => std::mem::take(buffered),
            _ => Vec::new(),
        };
        self.forget(&name);
        self.nodes.insert(
            name.clone(),
            Node {
                region,
                epoch,
                seq,
                users: HashMap::new(),
                connections: 0,
                last_seen: now,
                interval,
                state: SyncState::InStep,
            },
        );
        for (user, count) in parts.into_iter().flat_map(|p| p.users) {
            self.change(&name, &user, i64::from(count));
        }
        let mut buffered = buffered;
        buffered.sort_by_key(|(s, _)| *s);
        for (delta_seq, changes) in buffered {
            let current = self.nodes[&name].seq;
            if delta_seq <= current {
                continue;
            }
            if delta_seq > current + 1 {
                return self.resync(&name, now);
            }
            if let Followup::AskSnapshot(n) = self.apply(&name, delta_seq, &changes, now) {
                return Followup::AskSnapshot(n);
            }
        }
        Followup::Nothing
    }

    fn forget(&mut self, node: &str) {
        let Some(known) = self.nodes.remove(node) else {
            return;
        };
        self.connections -= known.connections;
        for user in known.users.keys() {
            if let Some(index) = self.users.get_mut(user) {
                index.remove(node);
                if index.is_empty() {
                    self.users.remove(user);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::snapshot_parts;
    use super::*;

    fn delta(node: &str, epoch: u64, seq: u64, changes: &[(&str, i64)]) -> NodeMessage {
        NodeMessage::Delta {
            node: node.into(),
            epoch,
            seq,
            sent_ms: 0,
            changes: changes.iter().map(|(u, c)| (u.to_string(), *c)).collect(),
        }
    }

    fn heartbeat(node: &str, epoch: u64, seq: u64) -> NodeMessage {
        NodeMessage::Heartbeat {
            node: node.into(),
            region: format!("region-of-{node}"),
            epoch,
            seq,
            interval_ms: 1000,
            connections: 0,
        }
    }

    fn snapshot(
        dir: &mut Directory,
        node: &str,
        epoch: u64,
        seq: u64,
        users: &[(&str, u32)],
    ) -> Followup {
        let users = users.iter().map(|(u, c)| (u.to_string(), *c));
        let mut followup = Followup::Nothing;
        for part in snapshot_parts(node, &format!("region-of-{node}"), epoch, seq, 1000, users) {
            followup = dir.on_snapshot_part(part, Instant::now());
        }
        followup
    }

    fn ask(node: &str) -> Followup {
        Followup::AskSnapshot(node.into())
    }

    /// A directory that knows node `n` (epoch 1) at seq 1 with alice ×2.
    fn in_step() -> Directory {
        let mut dir = Directory::default();
        let now = Instant::now();
        assert_eq!(dir.on_message(heartbeat("n", 1, 1), now), ask("n"));
        assert_eq!(
            snapshot(&mut dir, "n", 1, 1, &[("alice", 2)]),
            Followup::Nothing
        );
        dir
    }

    #[test]
    fn deltas_in_order_apply_and_lookups_see_them() {
        let mut dir = in_step();
        let now = Instant::now();
        assert_eq!(
            dir.on_message(delta("n", 1, 2, &[("bob", 1), ("alice", -1)]), now),
            Followup::Nothing
        );
        assert_eq!(
            dir.lookup("alice"),
            UserPresence {
                connections: 1,
                nodes: vec!["n".into()],
                regions: vec!["region-of-n".into()],
            }
        );
        assert_eq!(dir.lookup("carol"), UserPresence::default());
        assert_eq!((dir.connections(), dir.users_online()), (2, 2));
        // A duplicate is ignored.
        assert_eq!(
            dir.on_message(delta("n", 1, 2, &[("bob", 1)]), now),
            Followup::Nothing
        );
        assert_eq!(dir.lookup("bob").connections, 1);
    }

    #[test]
    fn a_gap_asks_for_a_snapshot_and_buffered_deltas_follow_it() {
        let mut dir = in_step();
        let now = Instant::now();
        // seq 2 was lost.
        assert_eq!(
            dir.on_message(delta("n", 1, 3, &[("bob", 1)]), now),
            ask("n")
        );
        assert_eq!(
            dir.on_message(delta("n", 1, 4, &[("bob", 1)]), now),
            Followup::Nothing
        );
        // The snapshot at seq 3 already holds bob's first connection.
        assert_eq!(
            snapshot(&mut dir, "n", 1, 3, &[("alice", 1), ("bob", 1)]),
            Followup::Nothing
        );
        assert_eq!(dir.lookup("bob").connections, 2);
        assert_eq!(dir.lookup("alice").connections, 1);
        assert_eq!(dir.waiting(), 0);
    }

    #[test]
    fn a_heartbeat_ahead_of_the_last_delta_reveals_a_lost_delta() {
        let mut dir = in_step();
        assert_eq!(
            dir.on_message(heartbeat("n", 1, 1), Instant::now()),
            Followup::Nothing
        );
        assert_eq!(
            dir.on_message(heartbeat("n", 1, 2), Instant::now()),
            ask("n")
        );
    }

    #[test]
    fn a_restarted_edge_starts_from_nothing() {
        let mut dir = in_step();
        assert_eq!(
            dir.on_message(delta("n", 2, 1, &[("bob", 1)]), Instant::now()),
            ask("n")
        );
        assert_eq!(
            dir.lookup("alice").connections,
            0,
            "old epoch's users are gone"
        );
        // A late message of the old run changes nothing.
        assert_eq!(
            dir.on_message(delta("n", 1, 2, &[("zed", 1)]), Instant::now()),
            Followup::Nothing
        );
        assert_eq!(
            snapshot(&mut dir, "n", 1, 9, &[("zed", 1)]),
            Followup::Nothing
        );
        assert_eq!(snapshot(&mut dir, "n", 2, 0, &[]), Followup::Nothing);
        assert_eq!(dir.lookup("bob").connections, 1);
        assert_eq!(dir.lookup("zed").connections, 0);
    }

    #[test]
    fn a_stale_snapshot_does_not_roll_state_back() {
        let mut dir = in_step();
        let _ = dir.on_message(delta("n", 1, 2, &[("bob", 1)]), Instant::now());
        assert_eq!(
            snapshot(&mut dir, "n", 1, 1, &[("alice", 2)]),
            Followup::Nothing
        );
        assert_eq!(dir.lookup("bob").connections, 1);
    }

    #[test]
    fn counts_that_would_go_negative_force_a_resync() {
        let mut dir = in_step();
        assert_eq!(
            dir.on_message(delta("n", 1, 2, &[("bob", -1)]), Instant::now()),
            ask("n")
        );
    }

    #[test]
    fn silent_nodes_expire_and_leaving_nodes_go_at_once() {
        let mut dir = in_step();
        let now = Instant::now();
        let _ = dir.on_message(heartbeat("m", 5, 0), now);
        let _ = snapshot(&mut dir, "m", 5, 0, &[("alice", 1)]);
        assert_eq!(dir.lookup("alice").nodes, ["m", "n"]);
        assert!(dir.expire(now + Duration::from_millis(2400)).is_empty());
        let mut gone = dir.expire(now + Duration::from_millis(2600));
        gone.sort();
        assert_eq!(gone, ["m", "n"]);
        assert_eq!((dir.connections(), dir.users_online()), (0, 0));

        let mut dir = in_step();
        let _ = dir.on_message(
            NodeMessage::Leaving {
                node: "n".into(),
                epoch: 1,
            },
            now,
        );
        assert!(!dir.is_online("alice"));
    }

    #[test]
    fn snapshot_parts_apply_only_when_complete() {
        let mut dir = Directory::default();
        let users: Vec<_> = (0..30_000).map(|i| (format!("user-{i:0>30}"), 1)).collect();
        let parts = snapshot_parts("n", "", 1, 0, 1000, users);
        assert!(parts.len() > 2);
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate().rev() {
            let _ = dir.on_snapshot_part(part, Instant::now());
            assert_eq!(dir.connections() > 0, i == 0, "after part {i} of {last}");
        }
        assert_eq!(dir.connections(), 30_000);
    }

    /// Random changes on three nodes, a fifth of the deltas lost: once
    /// every asked snapshot is answered, the directory equals the truth.
    #[test]
    fn lossy_streams_converge_to_the_truth() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut truth: Vec<HashMap<String, u32>> = vec![HashMap::new(); 3];
        let mut seqs = [0u64; 3];
        let mut dir = Directory::default();
        let now = Instant::now();
        let mut asked = std::collections::HashSet::new();
        for _ in 0..5_000 {
            let n = rng.usize(0..3);
            let user = format!("u{}", rng.u32(0..50));
            let count = truth[n].entry(user.clone()).or_default();
            let change = if *count > 0 && rng.bool() { -1 } else { 1 };
            *count = (*count as i64 + change) as u32;
            truth[n].retain(|_, c| *c > 0);
            seqs[n] += 1;
            if rng.u8(0..5) == 0 {
                continue; // lost
            }
            if let Followup::AskSnapshot(node) =
                dir.on_message(delta(&n.to_string(), 1, seqs[n], &[(&user, change)]), now)
            {
                asked.insert(node);
            }
            if rng.u8(0..50) == 0 {
                for node in asked.drain() {
                    let i: usize = node.parse().unwrap();
                    let users: Vec<(&str, u32)> =
                        truth[i].iter().map(|(u, c)| (u.as_str(), *c)).collect();
                    let _ = snapshot(&mut dir, &node, 1, seqs[i], &users);
                }
            }
        }
        for (n, seq) in seqs.iter().enumerate() {
            if let Followup::AskSnapshot(node) =
                dir.on_message(heartbeat(&n.to_string(), 1, *seq), now)
            {
                asked.insert(node);
            }
        }
        for node in asked.drain() {
            let i: usize = node.parse().unwrap();
            let users: Vec<(&str, u32)> = truth[i].iter().map(|(u, c)| (u.as_str(), *c)).collect();
            let _ = snapshot(&mut dir, &node, 1, seqs[i], &users);
        }
        let mut expected: HashMap<String, u32> = HashMap::new();
        for node in &truth {
            for (user, count) in node {
                *expected.entry(user.clone()).or_default() += count;
            }
        }
        assert_eq!(dir.counts(), expected);
        assert_eq!(dir.waiting(), 0);
    }
}
