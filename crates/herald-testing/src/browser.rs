//! Headless Chromium (Debian's `chromium`) for browser tests, driven over
//! the DevTools protocol: open a page, evaluate JavaScript in it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One headless Chromium showing one page; killed on drop.
pub struct Browser {
    child: Child,
    _profile: TempDir,
    page: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium on `url`. The binary is `$HERALD_CHROMIUM` or
    /// `chromium` on `PATH` (`apt-get install chromium`).
    pub async fn open(url: &str) -> Self {
        let binary = std::env::var("HERALD_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
        let profile = tempfile::Builder::new()
            .prefix("herald-chromium-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The flags keep Chromium off the network it cannot reach here.
        let child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--remote-debugging-port={port}"))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary}: {e}; install it with `apt-get install chromium`")
            });
        let ws_url = page_target(port).await;
        let (page, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .expect("DevTools websocket");
        Self {
            child,
            _profile: profile,
            page,
            next_id: 0,
        }
    }

    /// Evaluates `expression` in the page and returns its value as JSON.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({ "expression": expression, "returnByValue": true });
        let result = self.call("Runtime.evaluate", params).await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Saves what the page shows as a PNG at `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let result = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = result["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Calls DevTools `method` on the page; its `result`.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let call = json!({ "id": id, "method": method, "params": params });
        self.page
            .send(Message::text(call.to_string()))
            .await
            .expect("send to DevTools");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.page.next())
                .await
                .expect("a DevTools answer within 10s")
                .expect("DevTools connection open")
                .expect("DevTools message");
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Waits (up to `timeout`) until `expression` evaluates to `want`; an
    /// expression that throws (the page still loading) reads as null.
    pub async fn wait_for(&mut self, expression: &str, want: Value, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let guarded =
            format!("(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()");
        loop {
            let got = self.eval(&guarded).await;
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{expression} is {got}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits for the page target's DevTools websocket URL.
async fn page_target(port: u16) -> String {
    let list = format!("http://127.0.0.1:{port}/json/list");
    crate::eventually(
        Duration::from_secs(20),
        "Chromium's DevTools endpoint",
        || async {
            let targets: Value = reqwest::get(&list).await.ok()?.json().await.ok()?;
            targets
                .as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .map(str::to_owned)
        },
    )
    .await
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
