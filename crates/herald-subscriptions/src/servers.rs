//! Where to (re)connect: the configured servers plus those the cluster
//! advertises in INFO, taken in turn, with a growing, jittered pause.

use std::time::Duration;

use async_nats::ServerAddr;

/// At most this many advertised servers are kept (INFO comes from the
/// network; a list without bound would be a leak).
const MAX_LEARNED: usize = 64;

/// The longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct Servers {
    known: Vec<ServerAddr>,
    configured: usize,
    /// Index of the next server to try.
    next: usize,
    /// `tls` if any configured URL said so: advertised servers are
    /// `host:port` only and must be reached the same way.
    scheme: &'static str,
}

impl Servers {
    pub fn new(configured: Vec<ServerAddr>) -> Self {
        let tls = configured.iter().any(ServerAddr::tls_required);
        Self {
            configured: configured.len(),
            known: configured,
            next: 0,
            scheme: if tls { "tls" } else { "nats" },
        }
    }

    pub fn configured(&self) -> &[ServerAddr] {
        &self.known[..self.configured]
    }

    /// Connected to `index` (of the configured ones): the next turn starts
    /// after it.
    pub fn connected_to(&mut self, index: usize) {
        self.next = index + 1;
    }

    /// The next server to try.
    pub fn pick(&mut self) -> ServerAddr {
        let server = self.known[self.next % self.known.len()].clone();
        self.next = (self.next + 1) % self.known.len();
        server
    }

    /// Adds the `host:port` URLs an INFO advertised.
    pub fn learn(&mut self, connect_urls: &[String]) {
        for url in connect_urls {
            if self.known.len() >= self.configured + MAX_LEARNED {
                return;
            }
            let Ok(addr) = format!("{}://{url}", self.scheme).parse::<ServerAddr>() else {
                continue;
            };
            let same = |k: &ServerAddr| k.host() == addr.host() && k.port() == addr.port();
            if !self.known.iter().any(same) {
                self.known.push(addr);
            }
        }
    }
}

/// The pause before reconnect attempt `attempt` (0 = at once): doubling
/// from 50 ms up to [`MAX_BACKOFF`], each somewhere in its upper half so
/// that a node's clients do not come back in step.
pub fn backoff(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let full = Duration::from_millis(50)
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(urls: &[&str]) -> Servers {
        Servers::new(urls.iter().map(|u| u.parse().unwrap()).collect())
    }

    #[test]
    fn turns_go_round_the_configured_and_learned_servers() {
        let mut s = servers(&["nats://127.0.0.1:1", "nats://127.0.0.1:2"]);
        s.connected_to(0);
        s.learn(&[
            "127.0.0.1:2".into(),
            "127.0.0.1:3".into(),
            "not a url at all".into(),
        ]);
        let ports: Vec<u16> = (0..4).map(|_| s.pick().port()).collect();
        assert_eq!(ports, [2, 3, 1, 2]);
        assert_eq!(s.configured().len(), 2);
    }

    #[test]
    fn learned_servers_keep_the_tls_scheme_and_a_bound() {
        let mut s = servers(&["tls://127.0.0.1:1"]);
        let many: Vec<String> = (0..1000).map(|p| format!("127.0.0.1:{}", p + 10)).collect();
        s.learn(&many);
        assert_eq!(s.known.len(), 1 + MAX_LEARNED);
        assert!(s.known.iter().all(ServerAddr::tls_required));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        assert_eq!(backoff(0), Duration::ZERO);
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
