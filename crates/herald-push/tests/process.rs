//! The herald-push-worker binary as operators run it: a missing or broken
//! service-account key, or a bad flag, ends it with one line and exit code 2.

use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald-push-worker"))
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_misconfigured(output: Output, flag: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(flag), "{stderr:?} should name {flag}");
}

#[test]
fn bad_credentials_and_flags_are_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let not_rsa = dir.path().join("not-rsa.json");
    let account = r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n","project_id":"p"}"#;
    std::fs::write(&not_rsa, account).unwrap();
    let no_project = dir.path().join("no-project.json");
    let key = include_str!("../../herald-testing/keys/rsa.pem");
    let account = serde_json::json!({"client_email": "a@b", "private_key": key});
    std::fs::write(&no_project, account.to_string()).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    assert_misconfigured(run(&[]), "--fcm-credentials");
    assert_misconfigured(
        run(&["--fcm-credentials", "/nonexistent.json"]),
        "--fcm-credentials",
    );
    assert_misconfigured(
        run(&["--fcm-credentials", &path(&garbage)]),
        "--fcm-credentials",
    );
    assert_misconfigured(
        run(&["--fcm-credentials", &path(&not_rsa)]),
        "--fcm-credentials",
    );
    assert_misconfigured(
        run(&["--fcm-credentials", &path(&no_project)]),
        "--fcm-project-id",
    );
    let valid = [
        "--fcm-credentials",
        &path(&no_project),
        "--fcm-project-id",
        "p",
    ];
    let with = |extra: &[&str]| {
        run(&valid
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>())
    };
    assert_misconfigured(with(&["--fcm-endpoint", "ftp://x"]), "--fcm-endpoint");
    assert_misconfigured(with(&["--fcm-max-attempts", "0"]), "--fcm-max-attempts");
    assert_misconfigured(
        with(&["--fcm-backoff", "10s", "--fcm-max-backoff", "1s"]),
        "--fcm-max-backoff",
    );
    assert_misconfigured(with(&["--api-token", "short"]), "--api-token");
    assert_misconfigured(with(&["--nats-url", "nats://127.0.0.1:1"]), "--nats-url");
}
