//! Durations as flags take them (`15s`, `500ms`, `2m`). A leaf module:
//! every module with a duration flag uses it, and it uses none of them.

use std::time::Duration;

/// Why a duration flag cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("{0} (try e.g. `15s`)")]
    Unreadable(humantime::DurationError),
    #[error("must be greater than zero")]
    Zero,
}

/// Parses durations such as `15s`, `500ms` or `2m` for clap.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(s).map_err(DurationError::Unreadable)?;
    if d.is_zero() {
        return Err(DurationError::Zero);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_reject_nonsense() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
        let unreadable = parse_duration("fast").unwrap_err().to_string();
        assert!(unreadable.ends_with("(try e.g. `15s`)"), "{unreadable}");
    }
}
