//! Where to (re)connect: the configured servers (shuffled) plus those the
//! cluster advertises in INFO now, taken in turn, with a growing,
//! jittered pause.

use std::time::Duration;

use async_nats::ServerAddr;

/// At most this many advertised servers are kept (INFO comes from the
/// network; a list without bound would be a leak).
const MAX_LEARNED: usize = 64;

/// The longest pause between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub(crate) struct Servers {
    /// The configured servers, shuffled once per process, so that a fleet
    /// of edges spreads over a cluster instead of all sitting on the
    /// first URL.
    configured: Vec<ServerAddr>,
    /// The other servers the cluster advertises now: replaced by each
    /// INFO, so servers that left are forgotten.
    learned: Vec<ServerAddr>,
    /// Index of the next server to try, over `configured` then `learned`.
    next: usize,
    /// `tls` if any configured URL said so: advertised servers are
    /// `host:port` only and must be reached the same way.
    scheme: &'static str,
    /// Only the configured servers are used (the advertised addresses
    /// are not reachable from here, e.g. an edge outside the cluster's
    /// network).
    ignore_advertised: bool,
}

impl Servers {
    pub(crate) fn new(mut configured: Vec<ServerAddr>, ignore_advertised: bool) -> Self {
        let tls = configured.iter().any(ServerAddr::tls_required);
        fastrand::shuffle(&mut configured);
        Self {
            configured,
            learned: Vec::new(),
            next: 0,
            scheme: if tls { "tls" } else { "nats" },
            ignore_advertised,
        }
    }

    /// The configured servers, in this process's order.
    pub(crate) fn configured(&self) -> &[ServerAddr] {
        &self.configured
    }

    /// Connected to `index` (of the configured ones): the next turn starts
    /// after it.
    pub(crate) fn connected_to(&mut self, index: usize) {
        self.next = index + 1;
    }

    /// Servers known: configured and advertised.
    pub(crate) fn len(&self) -> usize {
        self.configured.len() + self.learned.len()
    }

    fn at(&self, index: usize) -> &ServerAddr {
        let index = index % self.len();
        match self.configured.get(index) {
            Some(server) => server,
            None => &self.learned[index - self.configured.len()],
        }
    }

    /// The next server to try, other than `avoid` while there is another.
    pub(crate) fn pick(&mut self, avoid: Option<&ServerAddr>) -> ServerAddr {
        for _ in 0..self.len() {
            let server = self.at(self.next).clone();
            self.next = (self.next + 1) % self.len();
            if avoid.is_none_or(|avoid| !same(avoid, &server)) {
                return server;
            }
        }
        self.at(self.next).clone()
    }

    /// Takes the `host:port` URLs an INFO advertises as the cluster's
    /// other servers, in place of those known before.
    pub(crate) fn learn(&mut self, connect_urls: &[String]) {
        if self.ignore_advertised {
            return;
        }
        let mut learned = Vec::new();
        for url in connect_urls {
            if learned.len() >= MAX_LEARNED {
                break;
            }
            let Ok(addr) = format!("{}://{url}", self.scheme).parse::<ServerAddr>() else {
                continue;
            };
            let known = |k: &ServerAddr| same(k, &addr);
            if !self.configured.iter().any(known) && !learned.iter().any(known) {
                learned.push(addr);
            }
        }
        self.learned = learned;
        self.next %= self.len().max(1);
    }
}

/// Whether two addresses are one server.
pub(crate) fn same(a: &ServerAddr, b: &ServerAddr) -> bool {
    a.host() == b.host() && a.port() == b.port()
}

/// The pause before reconnect attempt `attempt` when `known` servers are
/// known: none between servers of one round (a dead address costs no
/// wait before the next), and before each round over all of them a
/// back-off, so that a server's clients do not come back in step.
pub(crate) fn pause(attempt: u32, known: usize) -> Duration {
    let known = known.max(1) as u32;
    match attempt % known {
        0 => backoff(attempt / known),
        _ => Duration::ZERO,
    }
}

/// The pause before round `attempt`: doubling from 50 ms up to
/// [`MAX_BACKOFF`], each somewhere in its upper half, and the first one
/// anywhere within 50 ms.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let first = Duration::from_millis(50);
    if attempt == 0 {
        return first.mul_f64(fastrand::f64());
    }
    let full = first.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
    full.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(urls: &[&str]) -> Servers {
        Servers::new(urls.iter().map(|u| u.parse().unwrap()).collect(), false)
    }

    fn ports(s: &mut Servers, n: usize) -> Vec<u16> {
        (0..n).map(|_| s.pick(None).port()).collect()
    }

    #[test]
    fn turns_go_round_the_configured_and_learned_servers() {
        let mut s = servers(&["nats://127.0.0.1:1"]);
        s.connected_to(0);
        s.learn(&[
            "127.0.0.1:1".into(),
            "127.0.0.1:3".into(),
            "not a url at all".into(),
        ]);
        assert_eq!(ports(&mut s, 4), [3, 1, 3, 1]);
        assert_eq!(s.configured().len(), 1);
    }

    #[test]
    fn servers_no_longer_advertised_are_forgotten() {
        let mut s = servers(&["nats://127.0.0.1:1"]);
        s.learn(&["127.0.0.1:2".into(), "127.0.0.1:3".into()]);
        s.learn(&["127.0.0.1:3".into()]);
        let mut seen = ports(&mut s, 4);
        seen.sort();
        assert_eq!(seen, [1, 1, 3, 3]);
        s.learn(&[]);
        assert_eq!(ports(&mut s, 2), [1, 1], "configured ones stay");
    }

    #[test]
    fn advertised_servers_can_be_ignored() {
        let mut s = Servers::new(vec!["nats://127.0.0.1:1".parse().unwrap()], true);
        s.learn(&["127.0.0.1:2".into()]);
        assert_eq!(ports(&mut s, 3), [1, 1, 1]);
    }

    #[test]
    fn a_server_to_avoid_is_skipped_while_there_is_another() {
        let mut s = servers(&["nats://127.0.0.1:1", "nats://127.0.0.1:2"]);
        let leaving: ServerAddr = "nats://127.0.0.1:1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(s.pick(Some(&leaving)).port(), 2);
        }
        let mut alone = servers(&["nats://127.0.0.1:1"]);
        assert_eq!(alone.pick(Some(&leaving)).port(), 1, "none other");
    }

    #[test]
    fn each_process_shuffles_the_configured_servers() {
        let urls: Vec<String> = (1..=8).map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let firsts: std::collections::HashSet<u16> = (0..200)
            .map(|_| servers(&urls).configured()[0].port())
            .collect();
        assert!(firsts.len() > 4, "first servers seen: {firsts:?}");
    }

    #[test]
    fn learned_servers_keep_the_tls_scheme_and_a_bound() {
        let mut s = servers(&["tls://127.0.0.1:1"]);
        let many: Vec<String> = (0..1000).map(|p| format!("127.0.0.1:{}", p + 10)).collect();
        s.learn(&many);
        assert_eq!(s.learned.len(), MAX_LEARNED);
        assert!(s.learned.iter().all(ServerAddr::tls_required));
    }

    #[test]
    fn a_round_over_every_server_waits_only_before_it_starts() {
        let pauses: Vec<bool> = (0..9).map(|a| pause(a, 3) > Duration::ZERO).collect();
        // Before rounds 1 and 2 (round 0's first pause may round to zero).
        assert_eq!(
            &pauses[1..],
            [false, false, true, false, false, true, false, false]
        );
        assert!(
            pause(12, 3) >= Duration::from_millis(200),
            "round 4 backs off"
        );
    }

    #[test]
    fn backoff_is_jittered_from_the_first_retry_and_grows_to_its_cap() {
        let firsts: Vec<Duration> = (0..50).map(|_| backoff(0)).collect();
        assert!(firsts.iter().all(|d| *d < Duration::from_millis(50)));
        assert!(firsts.iter().any(|d| *d != firsts[0]), "jittered");
        for attempt in 1..40 {
            let pause = backoff(attempt);
            assert!(
                pause <= MAX_BACKOFF && pause >= Duration::from_millis(50),
                "{pause:?}"
            );
        }
        assert!(backoff(30) >= MAX_BACKOFF / 2);
    }
}
