//! A tiny run of herald-bench against an in-process stack, so CI proves
//! the load generator still works (the full scenarios run from bench/run.sh).

use herald_e2e::*;

/// herald-bench's `RESULT` lines, once it exited successfully.
fn results(output: &std::process::Output) -> Vec<serde_json::Value> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

const API_TOKEN: &str = "bench-smoke-api-token-0123456789";

/// NATS, herald-publish behind [`API_TOKEN`] (as a deployed one is) and an
/// edge.
async fn guarded_stack() -> Stack {
    let mut publish = publish_config();
    publish.api_token = Some(API_TOKEN.to_owned());
    Stack::builder()
        .publish(publish)
        .edge(edge_config("bench-edge"))
        .start()
        .await
}

#[tokio::test]
async fn herald_bench_idle_and_fanout_ramp_run_and_count_every_delivery() {
    let stack = guarded_stack().await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = API_TOKEN;
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
    let results = results(&output);
    let [idle, slow, fast] = &results[..] else {
        panic!("want an idle result and two rates: {results:?}");
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
    plot_draws_the_fanout_and_says_unicast_is_missing(&results);
}

/// bench/plot.py on a run without unicast, as `SCENARIOS=fanout
/// bench/run.sh` leaves it: the fan-out plot is drawn; for unicast it says
/// there is nothing to plot (it used to crash on an empty `max()`).
fn plot_draws_the_fanout_and_says_unicast_is_missing(results: &[serde_json::Value]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.jsonl");
    let lines: Vec<String> = results.iter().map(|r| r.to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let plot = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/plot.py");
    let run = |scenario: &str| {
        std::process::Command::new("python3")
            .args([plot, file.to_str().unwrap(), scenario])
            .output()
            .expect("python3 runs bench/plot.py")
    };
    let fanout = run("fanout");
    let svg = String::from_utf8_lossy(&fanout.stdout);
    assert!(
        fanout.status.success(),
        "{}",
        String::from_utf8_lossy(&fanout.stderr)
    );
    assert!(svg.starts_with("<svg") && svg.contains("herald"), "{svg}");
    assert_eq!(
        svg.matches("<circle").count(),
        2,
        "one point per rate: {svg}"
    );

    let unicast = run("unicast");
    let stderr = String::from_utf8_lossy(&unicast.stderr);
    assert_eq!(unicast.status.code(), Some(1), "{stderr}");
    assert!(unicast.stdout.is_empty());
    assert!(
        stderr.contains("no unicast results") && !stderr.contains("Traceback"),
        "{stderr}"
    );
}

#[tokio::test]
async fn herald_bench_churn_replaces_streams_and_samples_memory() {
    let stack = Stack::start(edge_config("bench-edge")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let output = tokio::process::Command::new(binary("herald-bench"))
        .args(["--peer", "herald", "--edge", &edge.addr.to_string()])
        .args(["--publish", &publish.url(), "--secret", SECRET])
        .args(["churn", "--pid", &std::process::id().to_string()])
        .args(["--live", "20", "--replace", "5", "--every-ms", "100"])
        .args(["--secs", "2", "--publish-rate", "20", "--sources", "2"])
        .args(["--sample-secs", "1", "--settle-secs", "1"])
        .output()
        .await
        .unwrap();
    let [result] = &results(&output)[..] else {
        panic!("want one churn result");
    };
    assert_eq!(result["scenario"], "churn");
    assert_eq!(result["failed_connects"], 0, "{result}");
    // 20 at first, then 5 more every 100 ms for 2 s (about 20 rounds).
    let connects = result["connects"].as_u64().unwrap();
    assert!((100..=140).contains(&connects), "{result}");
    assert!(result["publishes"].as_u64().unwrap() >= 20, "{result}");
    assert!(result["samples"].as_array().unwrap().len() >= 2, "{result}");
    for field in ["baseline_rss_kib", "peak_rss_kib", "after_close_rss_kib"] {
        assert!(result[field].as_u64().unwrap() > 0, "{field}: {result}");
    }
}

/// bench/scale.sh's load run, tiny: two edges, two load-generator
/// processes, every phase, every event counted, and the summary line.
#[tokio::test]
async fn herald_bench_scale_runs_every_phase_over_two_edges_and_loses_nothing() {
    let mut stack = Stack::builder().publish(publish_config());
    for node in ["scale-a", "scale-b"] {
        let mut config = edge_config(node);
        config.heartbeat = std::time::Duration::from_secs(1);
        stack = stack.edge(config);
    }
    let stack = stack.start().await;
    let (publish, edges) = (stack.publish(), &stack.edges);
    let edge_list = format!("{},{}", edges[0].addr, edges[1].addr);
    let output = tokio::process::Command::new(binary("herald-bench"))
        .args(["--peer", "herald", "--publish", &publish.url()])
        .args(["--secret", SECRET, "--timeout", "30", "scale"])
        .args([
            "--edges",
            &edge_list,
            "--edge-pid",
            &std::process::id().to_string(),
        ])
        .args(["--streams", "40", "--topics", "2", "--sources", "127.0.0.1"])
        .args(["--heartbeat-secs", "1", "--fanout-events", "3"])
        .args(["--rates", "20", "--secs", "1", "--p99-limit-ms", "10000"])
        .output()
        .await
        .unwrap();
    let phases = results(&output);
    let [open, idle, fanout, unicast] = &phases[..] else {
        panic!("want open, idle, fan-out and unicast phases: {phases:?}");
    };
    assert_eq!(
        (&open["phase"], &open["opened"], &open["errors"]),
        (&"open".into(), &40.into(), &0.into()),
        "{open}"
    );
    assert_eq!(
        (&open["edges"], &open["agents"]),
        (&2.into(), &2.into()),
        "{open}"
    );
    assert_eq!(idle["two_heartbeats"], 40, "{idle}");
    // 20 of the 40 streams follow one of the 2 topics: 3 events each.
    assert_eq!(fanout["expected"], 60, "{fanout}");
    assert_eq!(
        (&fanout["deliveries"], &fanout["lost"]),
        (&60.into(), &0.into()),
        "{fanout}"
    );
    assert_eq!(unicast["phase"], "unicast", "{unicast}");
    assert_eq!(
        (&unicast["sent"], &unicast["received"], &unicast["lost"]),
        (&20.into(), &20.into(), &0.into()),
        "{unicast}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().last().unwrap();
    assert!(summary.starts_with("scale: 40 streams, "), "{summary}");
    assert!(summary.contains(" KiB/stream, fan-out "), "{summary}");
    assert!(summary.ends_with(", lost 0"), "{summary}");
}

#[tokio::test]
async fn herald_bench_unicast_drives_each_publish_path_and_loses_nothing() {
    let stack = guarded_stack().await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = API_TOKEN;
    let pid = format!("self={}", std::process::id());
    for via in ["grpc", "batch", "http"] {
        let output = tokio::process::Command::new(binary("herald-bench"))
            .args(["--peer", "herald", "--edge", &edge.addr.to_string()])
            .args(["--publish", &publish.url(), "--secret", SECRET])
            .args(["--api-token", token, "--timeout", "30"])
            .args([
                "unicast",
                "--users",
                "20",
                "--sources",
                "2",
                "--rates",
                "200",
            ])
            .args(["--secs", "1", "--publishers", "4", "--batch-size", "10"])
            .args(["--via", via, "--cpu-pid", &pid])
            .output()
            .await
            .unwrap();
        let [step] = &results(&output)[..] else {
            panic!("want one step: {}", String::from_utf8_lossy(&output.stderr));
        };
        assert_eq!(step["via"], via, "{step}");
        assert_eq!(
            (&step["sent"], &step["lost"]),
            (&200.into(), &0.into()),
            "{step}"
        );
        assert_eq!(step["publish_errors"], 0, "{step}");
        assert!(
            step["cpu_us_per_event"]["self"].as_f64().is_some(),
            "{step}"
        );
    }
}
