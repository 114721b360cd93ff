//! A tiny run of herald-bench against an in-process stack, so CI proves
//! the load generator still works (the full scenarios run from bench/run.sh).

use herald_e2e::*;

#[tokio::test]
async fn herald_bench_fanout_runs_and_counts_every_delivery() {
    let stack = Stack::start(edge_config("bench-edge")).await;
    let output = tokio::process::Command::new(binary("herald-bench"))
        .args(["--peer", "herald", "--edge", &stack.edge.addr.to_string()])
        .args(["--publish", &stack.publish.url(), "--secret", SECRET])
        .args([
            "--timeout",
            "30",
            "fanout",
            "--pid",
            &std::process::id().to_string(),
        ])
        .args([
            "--connections",
            "20",
            "--events",
            "5",
            "--sources",
            "2",
            "--idle-secs",
            "1",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line: {stdout}"));
    let result: serde_json::Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["expected"], 100);
    assert_eq!(result["deliveries"], 100, "{result}");
    assert_eq!(result["peer"], "herald");
}
