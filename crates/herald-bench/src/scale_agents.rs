//! The scale run's load-generator processes, driven over their stdin and
//! stdout (see `scale_agent`), and the CPU of the processes under test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::Target;
use crate::scale_agent::{Opened, Report};
use crate::scale_args::Args;

/// One running agent.
struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    opened: Opened,
}

/// Every agent, each holding its share of the streams on its own edge.
pub(crate) struct Agents(Vec<Agent>);

/// The agents' reports added up, histograms merged.
pub(crate) struct Merged {
    pub alive: u64,
    pub one_heartbeat: u64,
    pub two_heartbeats: u64,
    pub topic_deliveries: u64,
    pub topic_duplicates: u64,
    pub last_topic_us: u64,
    pub unicast_received: u64,
    pub unicast_duplicates: u64,
    pub topic_latency: Histogram<u64>,
    pub unicast_latency: Histogram<u64>,
}

impl Agents {
    /// Starts one agent per edge, splitting `--streams` evenly, and waits
    /// (within `--timeout`) until each has opened its streams.
    pub(crate) async fn spawn(target: &Target, args: &Args) -> anyhow::Result<Self> {
        let count = args.edges.len();
        let per = args.streams.div_ceil(count);
        let mut agents = Vec::with_capacity(count);
        for (g, edge) in args.edges.iter().enumerate() {
            let first = g * per;
            let streams = per.min(args.streams.saturating_sub(first));
            let sources: Vec<String> = (0..args.sources_per_agent)
                .map(|s| args.sources[(g * args.sources_per_agent + s) % args.sources.len()])
                .map(|a| a.to_string())
                .collect();
            let mut child = tokio::process::Command::new(std::env::current_exe()?)
                .args(["--peer", "herald", "--edge", &edge.to_string()])
                .args(["scale-agent", "--first", &first.to_string()])
                .args(["--count", &streams.to_string()])
                .args(["--sources", &sources.join(",")])
                .args(["--topics", &args.topics.to_string()])
                .args(["--open-rate", &(args.open_rate / count as f64).to_string()])
                .args(["--open-attempts", &args.open_attempts.to_string()])
                // By environment, not argument: kept out of process lists.
                .env("HERALD_JWT_SECRET", &target.secret)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("spawn scale-agent")?;
            let stdin = child.stdin.take().context("agent stdin")?;
            let stdout = BufReader::new(child.stdout.take().context("agent stdout")?).lines();
            let opened = Opened {
                opened: 0,
                failed: 0,
                retried: 0,
                first_error: None,
            };
            agents.push(Agent {
                child,
                stdin,
                stdout,
                opened,
            });
        }
        // All open in parallel; each answers once its share is open.
        for agent in &mut agents {
            let line = read_line(&mut agent.stdout, target.timeout).await?;
            agent.opened = serde_json::from_str(&line)?;
        }
        Ok(Self(agents))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The agents' process ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.0.iter().filter_map(|a| a.child.id()).collect()
    }

    /// What every agent opened, added up.
    pub(crate) fn opened(&self) -> Opened {
        let mut all = Opened {
            opened: 0,
            failed: 0,
            retried: 0,
            first_error: None,
        };
        for agent in &self.0 {
            all.opened += agent.opened.opened;
            all.failed += agent.opened.failed;
            all.retried += agent.opened.retried;
            if all.first_error.is_none() {
                all.first_error.clone_from(&agent.opened.first_error);
            }
        }
        all
    }

    /// Starts a phase in every agent, with room for `capacity` unicast
    /// events.
    pub(crate) async fn mark(&mut self, capacity: usize) -> anyhow::Result<()> {
        for agent in &mut self.0 {
            let command = format!("mark {capacity}\n");
            agent.stdin.write_all(command.as_bytes()).await?;
        }
        // A report after the marks: every agent has applied its mark.
        self.report().await.map(drop)
    }

    /// Every agent's counts since the last mark, merged.
    pub(crate) async fn report(&mut self) -> anyhow::Result<Merged> {
        for agent in &mut self.0 {
            agent.stdin.write_all(b"report\n").await?;
        }
        let mut merged = Merged::new()?;
        for agent in &mut self.0 {
            let line = read_line(&mut agent.stdout, Duration::from_secs(30)).await?;
            merged.add(serde_json::from_str(&line)?)?;
        }
        Ok(merged)
    }

    /// Reports every 100 ms until `done` holds or `timeout` passes; the
    /// last report either way.
    pub(crate) async fn wait(
        &mut self,
        timeout: Duration,
        done: impl Fn(&Merged) -> bool,
    ) -> anyhow::Result<Merged> {
        let deadline = Instant::now() + timeout;
        loop {
            let report = self.report().await?;
            if done(&report) || Instant::now() > deadline {
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Closes the agents' stdin (they exit) and waits a little for them.
    pub(crate) async fn quit(self) {
        for mut agent in self.0 {
            drop(agent.stdin);
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.child.wait()).await;
        }
    }
}

async fn read_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    timeout: Duration,
) -> anyhow::Result<String> {
    tokio::time::timeout(timeout, lines.next_line())
        .await
        .context("an agent did not answer in time")??
        .context("an agent exited")
}

impl Merged {
    fn new() -> anyhow::Result<Self> {
        let histogram = || Histogram::new_with_bounds(1, 600_000_000, 3);
        Ok(Self {
            alive: 0,
            one_heartbeat: 0,
            two_heartbeats: 0,
            topic_deliveries: 0,
            topic_duplicates: 0,
            last_topic_us: 0,
            unicast_received: 0,
            unicast_duplicates: 0,
            topic_latency: histogram()?,
            unicast_latency: histogram()?,
        })
    }

    fn add(&mut self, report: Report) -> anyhow::Result<()> {
        self.alive += report.alive;
        self.one_heartbeat += report.one_heartbeat;
        self.two_heartbeats += report.two_heartbeats;
        self.topic_deliveries += report.topic_deliveries;
        self.topic_duplicates += report.topic_duplicates;
        self.last_topic_us = self.last_topic_us.max(report.last_topic_us);
        self.unicast_received += report.unicast_received;
        self.unicast_duplicates += report.unicast_duplicates;
        for (value, count) in report.topic_latency {
            self.topic_latency.record_n(value, count)?;
        }
        for (value, count) in report.unicast_latency {
            self.unicast_latency.record_n(value, count)?;
        }
        Ok(())
    }
}

/// CPU of named groups of processes: the edges, and each `--cpu-pid`.
pub(crate) struct CpuGroups(Vec<(String, Vec<u32>)>);

impl CpuGroups {
    pub(crate) fn new(args: &Args) -> anyhow::Result<Self> {
        let mut groups = vec![("edges".to_owned(), args.edge_pids.clone())];
        for named in &args.cpu_pids {
            let (name, pid) = named.split_once('=').context("--cpu-pid is name=pid")?;
            let pid = pid.parse().context("--cpu-pid pid")?;
            match groups.iter_mut().find(|(n, _)| n == name) {
                Some((_, pids)) => pids.push(pid),
                None => groups.push((name.to_owned(), vec![pid])),
            }
        }
        groups.push(("load".to_owned(), vec![std::process::id()]));
        Ok(Self(groups))
    }

    /// Resident memory (PSS) of each group other than the load
    /// generators, in MiB, and of each NATS node on its own.
    pub(crate) fn pss_mib(&self) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        let mut all = serde_json::Map::new();
        for (name, pids) in self.0.iter().filter(|(name, _)| name != "load") {
            let total = crate::fanout::pss_kib(pids)? / 1024;
            all.insert(name.clone(), total.into());
            if name == "nats" {
                let each: Vec<u64> = pids
                    .iter()
                    .map(|pid| crate::fanout::pss_kib(&[*pid]).map(|k| k / 1024))
                    .collect::<anyhow::Result<_>>()?;
                all.insert("nats_each".to_owned(), each.into());
            }
        }
        Ok(all)
    }

    /// Clock ticks used so far, per group.
    pub(crate) fn ticks(&self) -> anyhow::Result<Vec<u64>> {
        self.0
            .iter()
            .map(|(name, pids)| {
                let pids = if name == "load" {
                    with_children(pids[0])
                } else {
                    pids.clone()
                };
                crate::fanout::cpu_ticks(&pids)
            })
            .collect()
    }

    /// Percent of one core each group used since `before`, over `secs`.
    pub(crate) fn percent_since(
        &self,
        before: &[u64],
        secs: f64,
    ) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        let now = self.ticks()?;
        Ok(self
            .0
            .iter()
            .zip(now.iter().zip(before))
            .map(|((name, _), (now, before))| {
                // 100 ticks per second: ticks per second is percent of a core.
                let percent = now.saturating_sub(*before) as f64 / secs;
                (
                    name.clone(),
                    serde_json::json!((percent * 10.0).round() / 10.0),
                )
            })
            .collect())
    }
}

/// `pid` and its children (the coordinator and its agents): each thread
/// lists the children it spawned.
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return pids;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    pids
}

/// The machine's memory as `/proc/meminfo` and `/proc/net/sockstat` tell
/// it, in MiB: used (total less available), what the kernel's slabs hold
/// (sockets among them), and TCP's buffer pages.
pub(crate) fn meminfo() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let sockstat = read("/proc/net/sockstat");
    let tcp_pages: u64 = sockstat
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "used_mib": (kib("MemTotal") - kib("MemAvailable")) / 1024,
        "slab_mib": kib("Slab") / 1024,
        "tcp_buffers_mib": tcp_pages * 4 / 1024,
    })
}
