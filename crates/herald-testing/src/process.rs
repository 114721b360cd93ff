//! Herald's binaries as operators run them: spawned with a clean
//! environment, their stderr kept for assertions, SIGTERM as `kill` sends
//! it, and killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::eventually;

/// A loopback address with a port free a moment ago, below the ephemeral
/// range: no test's outgoing connection can take it meanwhile.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::nats::free_port()))
}

/// Runs `binary` to its end with only `args` and `envs` (no inherited
/// environment, so a developer's `HERALD_*` cannot change the outcome).
pub fn run(binary: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(binary)
        .args(args)
        .env_clear()
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()))
}

/// Asserts exit code 2 and one stderr line that names `flag`.
pub fn assert_misconfigured(output: &Output, flag: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(flag), "{stderr:?} should name {flag}");
}

/// A service process; killed when dropped.
pub struct Service {
    child: Child,
    /// Its admin port (`/readyz`, `/metrics`).
    pub admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Service {
    /// Spawns `binary` with `args`, `--admin-listen` on a free loopback
    /// port and only `envs` as its environment.
    pub fn spawn(binary: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let admin = free_addr();
        let mut child = Command::new(binary)
            .args(args)
            .args(["--admin-listen", &admin.to_string()])
            .env_clear()
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped");
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            child,
            admin,
            stderr,
        }
    }

    /// Waits until `/readyz` answers 200, or panics with the log so far.
    pub async fn ready(&mut self) {
        let readyz = format!("http://{}/readyz", self.admin);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = reqwest::get(&readyz).await
                && response.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited with {status} before ready:\n{}", self.stderr());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not ready after 20 s:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/readyz`'s status and body (why it is not ready).
    pub async fn readyz(&self) -> (u16, String) {
        let readyz = format!("http://{}/readyz", self.admin);
        let answer = reqwest::get(&readyz)
            .await
            .unwrap_or_else(|e| panic!("GET {readyz}: {e}"));
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap_or_default())
    }

    /// Everything it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains every one of `needles`; returns
    /// that line.
    pub async fn logged(&self, needles: &[&str]) -> String {
        let what = format!("a log line with {needles:?}");
        eventually(Duration::from_secs(10), &what, || async {
            let log = self.stderr();
            let line = log
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))?;
            Some(line.to_owned())
        })
        .await
    }

    /// Sends SIGTERM, as an orchestrator stopping it does.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// True once it has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits for it to exit, at most `timeout`.
    pub async fn exited(&mut self, timeout: Duration) -> ExitStatus {
        eventually(timeout, "the process to exit", || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
