//! nginx (Debian's `nginx-light`) in front of edges, run from a config text
//! as operators deploy it; everything it logs is kept for assertions.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

/// One nginx master and its workers; stopped on drop.
pub struct Nginx {
    child: Child,
    _prefix: TempDir,
    log: Arc<Mutex<String>>,
}

impl Nginx {
    /// Runs nginx with `config` (a whole nginx.conf) until it accepts on
    /// `listen`, an address the config listens on. The binary is
    /// `$HERALD_NGINX`, else `nginx` from `/usr/sbin` or `PATH`.
    pub async fn start(config: &str, listen: SocketAddr) -> Self {
        let prefix = tempfile::Builder::new()
            .prefix("herald-nginx-")
            .tempdir()
            .unwrap();
        let conf = prefix.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        // Only where the master keeps its pid: the config is the operator's.
        let globals = format!(
            "pid {}; daemon off;",
            prefix.path().join("nginx.pid").display()
        );
        let binary = binary();
        let mut child = Command::new(&binary)
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", &globals])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary}: {e}; install it with `apt-get install nginx-light`")
            });
        let log = Arc::new(Mutex::new(String::new()));
        keep(child.stdout.take().unwrap(), log.clone());
        keep(child.stderr.take().unwrap(), log.clone());
        let nginx = Self {
            child,
            _prefix: prefix,
            log,
        };
        nginx.accepting(listen).await;
        nginx
    }

    async fn accepting(&self, listen: SocketAddr) {
        let what = format!("nginx to accept on {listen}");
        crate::eventually(Duration::from_secs(10), &what, || async {
            let log = self.log();
            assert!(!log.contains("[emerg]"), "nginx failed to start:\n{log}");
            tokio::net::TcpStream::connect(listen).await.ok().map(drop)
        })
        .await;
    }

    /// Everything nginx wrote so far: its access log and error log, as the
    /// config sends them to stdout and stderr.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

fn binary() -> String {
    if let Ok(binary) = std::env::var("HERALD_NGINX") {
        return binary;
    }
    let debian = "/usr/sbin/nginx";
    if std::path::Path::new(debian).exists() {
        debian.to_owned()
    } else {
        "nginx".to_owned()
    }
}

/// Appends every line from `pipe` to `log`, on a thread of its own.
fn keep(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL would leave the workers behind; SIGTERM (nginx's fast
        // shutdown) ends them with the master, open streams or not.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
