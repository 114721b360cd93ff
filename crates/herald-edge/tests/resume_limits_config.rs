//! The replay caps and the connect rate as flags: defaults, and hostile
//! values refused with the flag named.

use clap::Parser;
use herald_edge::Args;

fn parse(extra: &[&str]) -> Result<herald_edge::Config, String> {
    let base = [
        "herald-edge",
        "--jwt-secret",
        "flag-test-secret-0123456789abcdef",
    ];
    let args = Args::try_parse_from(base.iter().chain(extra)).map_err(|e| e.to_string())?;
    args.validate().map_err(|e| e.to_string())
}

#[test]
fn defaults_allow_a_browser_burst_and_one_history_per_subject() {
    let config = parse(&[]).unwrap();
    assert_eq!(config.replay.events, 1000);
    assert_eq!(config.replay.bytes, 1024 * 1024);
    assert_eq!(config.connect_rate.per_second, 1.0);
    assert_eq!(config.connect_rate.burst, 30);
    let config = parse(&[
        "--max-replay-events",
        "5",
        "--max-replay-bytes",
        "4096",
        "--connect-rate-per-user",
        "0.25",
        "--connect-burst-per-user",
        "3",
    ])
    .unwrap();
    assert_eq!((config.replay.events, config.replay.bytes), (5, 4096));
    assert_eq!(config.connect_rate.per_second, 0.25);
    assert_eq!(config.connect_rate.burst, 3);
}

#[test]
fn hostile_values_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--connect-rate-per-user", "0"),
        ("--connect-rate-per-user", "-1"),
        ("--connect-rate-per-user", "NaN"),
        ("--connect-rate-per-user", "inf"),
        ("--connect-rate-per-user", "1e400"),
        ("--connect-rate-per-user", "fast"),
        ("--connect-burst-per-user", "0"),
        ("--connect-burst-per-user", "4294967296"),
        ("--max-replay-events", "0"),
        ("--max-replay-events", "-1"),
        ("--max-replay-bytes", "0"),
        ("--max-replay-bytes", "1MiB"),
    ] {
        let Err(error) = parse(&[&format!("{flag}={value}")]) else {
            panic!("{flag} {value} was accepted");
        };
        assert!(error.contains(flag), "{flag} {value}: {error}");
    }
}
