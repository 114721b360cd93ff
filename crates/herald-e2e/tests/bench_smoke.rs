//! A tiny run of herald-bench against an in-process stack, so CI proves
//! the load generator still works (the full scenarios run from bench/run.sh).

use herald_e2e::*;

#[tokio::test]
async fn herald_bench_idle_and_fanout_ramp_run_and_count_every_delivery() {
    // herald-publish behind an API token, as a deployed one is.
    let token = "bench-smoke-api-token-0123456789";
    let nats = herald_testing::NatsServer::start();
    let mut publish = herald_publish::Config::defaults("p");
    publish.api_token = Some(token.to_owned());
    let publish = start_publish(&nats.client_url(), publish).await;
    let edge = start_edge(&nats.client_url(), edge_config("bench-edge")).await;
    let output = tokio::process::Command::new(binary("herald-bench"))
        .args(["--peer", "herald", "--edge", &edge.addr.to_string()])
        .args(["--publish", &publish.url(), "--secret", SECRET])
        .args(["--api-token", token])
        .args([
            "--timeout",
            "30",
            "fanout",
            "--pid",
            &std::process::id().to_string(),
        ])
        .args(["--connections", "20", "--sources", "2", "--idle-secs", "1"])
        .args(["--rates", "5,10", "--secs", "1", "--publishers", "2"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let [idle, slow, fast] = &results[..] else {
        panic!("want an idle result and two rates: {stdout}");
    };
    assert_eq!(idle["scenario"], "idle");
    assert_eq!(idle["connections"], 20);
    assert!(idle["kib_per_idle_stream"].as_f64().is_some(), "{idle}");
    for (step, events) in [(slow, 5), (fast, 10)] {
        assert_eq!(step["scenario"], "fanout");
        assert_eq!(step["peer"], "herald");
        assert_eq!(step["sent"], events, "{step}");
        assert_eq!(step["expected"], events * 20, "{step}");
        assert_eq!(step["deliveries"], events * 20, "{step}");
        assert_eq!(step["lost"], 0, "{step}");
        assert!(step["p99_ms"].as_f64().unwrap() > 0.0, "{step}");
    }
}
