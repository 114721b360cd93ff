//! WHATWG EventSources as Node apps run them: npm's `eventsource` package
//! in one `node` process (node/event-sources.mjs), one stream per URL.
//! `npm ci --prefix crates/herald-testing/node` installs it (scripts/test.sh
//! does).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// What one EventSource has seen.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// How many times its stream opened.
    pub opens: usize,
    /// `(id, data)` of every event, in arrival order.
    pub events: Vec<(String, String)>,
    /// Whether it reported an error in state CLOSED: it gave up for good.
    pub gave_up: bool,
}

#[derive(Default)]
struct Shared {
    clients: Vec<Seen>,
    states: Option<Vec<u64>>,
}

/// A `node` process holding one EventSource per URL; killed on drop.
pub struct EventSources {
    child: Child,
    stdin: ChildStdin,
    shared: Arc<Mutex<Shared>>,
}

impl EventSources {
    /// Opens one EventSource per URL.
    pub fn open(urls: &[String]) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
        assert!(
            dir.join("node_modules/eventsource").exists(),
            "npm's eventsource is missing; run: npm ci --prefix {}",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("event-sources.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node: {e}; run: apt-get install nodejs npm"));
        let shared = Arc::new(Mutex::new(Shared {
            clients: vec![Seen::default(); urls.len()],
            states: None,
        }));
        let stdout = child.stdout.take().unwrap();
        let record = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line: Value = serde_json::from_str(&line).expect("event-sources.mjs JSON");
                record.lock().unwrap().record(&line);
            }
        });
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(urls).unwrap()).unwrap();
        Self {
            child,
            stdin,
            shared,
        }
    }

    /// What each EventSource has seen so far, by URL.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().clients.clone()
    }

    /// Each EventSource's `readyState` now (0 connecting, 1 open, 2
    /// closed).
    pub async fn states(&mut self) -> Vec<u64> {
        self.shared.lock().unwrap().states = None;
        writeln!(self.stdin, "report").unwrap();
        crate::eventually(Duration::from_secs(10), "a state report", || async {
            self.shared.lock().unwrap().states.clone()
        })
        .await
    }
}

impl Shared {
    fn record(&mut self, line: &Value) {
        if let Some(states) = line["states"].as_array() {
            self.states = Some(states.iter().filter_map(Value::as_u64).collect());
            return;
        }
        let client = &mut self.clients[line["c"].as_u64().unwrap() as usize];
        if line["open"] == true {
            client.opens += 1;
        } else if line["error"] == true {
            client.gave_up |= line["state"] == 2;
        } else {
            let text = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
            client.events.push((text("id"), text("data")));
        }
    }
}

impl Drop for EventSources {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
