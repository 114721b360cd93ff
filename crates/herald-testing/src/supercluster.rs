//! A NATS supercluster on loopback: one routed cluster per region, the
//! clusters joined by gateways, JetStream in one domain across them, as
//! docs/operations.md ("Regions") deploys it.

use std::time::Duration;

use serde_json::Value;

use crate::nats::{Files, NatsCluster, NatsServer, free_port};

/// Clusters joined by gateways, one per region.
pub struct NatsSupercluster {
    pub regions: Vec<(String, NatsCluster)>,
}

impl NatsSupercluster {
    /// Regions named `names` (also their clusters' and gateways' names;
    /// nodes `<name>1`, `<name>2`, …), `size` nodes each; returns once
    /// every node routes to its cluster, every gateway is up and
    /// JetStream can place a replicated stream in every region.
    pub async fn start(names: &[&str], size: usize) -> Self {
        let supercluster = Self::spawn(names, size, "", &Files::default());
        supercluster.settle().await;
        for (_, cluster) in &supercluster.regions {
            cluster.wait_for_jetstream().await;
        }
        supercluster
    }

    /// Like [`NatsSupercluster::start`], every node with `extra`
    /// configuration and `files` (e.g. `include ./auth.conf`, with its
    /// passwords in the environment); waits for JetStream's meta leader
    /// only, since the probe stream would need a user allowed to make it.
    pub async fn start_with(names: &[&str], size: usize, extra: &str, files: &Files<'_>) -> Self {
        let supercluster = Self::spawn(names, size, extra, files);
        supercluster.settle().await;
        for (_, cluster) in &supercluster.regions {
            cluster.wait_for_meta_leader().await;
        }
        supercluster
    }

    fn spawn(names: &[&str], size: usize, common: &str, files: &Files<'_>) -> Self {
        let ports = |_| (0..size).map(|_| free_port()).collect::<Vec<u16>>();
        let route_ports: Vec<Vec<u16>> = names.iter().map(ports).collect();
        let gateway_ports: Vec<Vec<u16>> = names.iter().map(ports).collect();
        let gateways: Vec<String> = names
            .iter()
            .zip(&gateway_ports)
            .map(|(name, ports)| {
                let urls: Vec<String> = ports
                    .iter()
                    .map(|p| format!("\"nats://127.0.0.1:{p}\""))
                    .collect();
                format!("{{ name: {name}, urls: [{}] }}", urls.join(", "))
            })
            .collect();
        let regions: Vec<(String, NatsCluster)> = names
            .iter()
            .enumerate()
            .map(|(r, name)| {
                let extra = |i: usize| {
                    format!(
                        "{common}gateway {{ name: {name}, listen: \"127.0.0.1:{}\", gateways: [{}] }}\n",
                        gateway_ports[r][i],
                        gateways.join(", ")
                    )
                };
                let cluster = NatsCluster::spawn(name, name, &route_ports[r], extra, files);
                ((*name).to_owned(), cluster)
            })
            .collect();
        Self { regions }
    }

    /// Waits for every route and gateway.
    async fn settle(&self) {
        for (_, cluster) in &self.regions {
            cluster.wait_for_mesh().await;
        }
        self.wait_for_gateways().await;
    }

    /// The cluster of region `name`.
    pub fn region(&self, name: &str) -> &NatsCluster {
        let found = self.regions.iter().find(|(n, _)| n == name);
        &found.unwrap_or_else(|| panic!("no region {name}")).1
    }

    /// The cluster of region `name`, to stop or restart its nodes.
    pub fn region_mut(&mut self, name: &str) -> &mut NatsCluster {
        let found = self.regions.iter_mut().find(|(n, _)| n == name);
        &mut found.unwrap_or_else(|| panic!("no region {name}")).1
    }

    /// Waits until every node has a gateway to every other region.
    pub async fn wait_for_gateways(&self) {
        let want = self.regions.len() - 1;
        for (_, cluster) in &self.regions {
            for node in &cluster.nodes {
                crate::eventually(Duration::from_secs(30), "every gateway", || async {
                    let gatewayz = node.monitor("/gatewayz").await;
                    let outbound = gatewayz["outbound_gateways"].as_object()?.len();
                    (outbound == want).then_some(())
                })
                .await;
            }
        }
    }
}

/// Messages the nodes of `cluster` sent over their gateways to region
/// `to` so far.
pub async fn gateway_out_msgs(cluster: &NatsCluster, to: &str) -> u64 {
    let mut sent = 0;
    for node in &cluster.nodes {
        sent += out_msgs(node, to).await;
    }
    sent
}

async fn out_msgs(node: &NatsServer, to: &str) -> u64 {
    let gatewayz: Value = node.monitor("/gatewayz").await;
    gatewayz["outbound_gateways"][to]["connection"]["out_msgs"]
        .as_u64()
        .unwrap_or(0)
}
