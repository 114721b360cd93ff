//! The error every binary's flag validation returns. It carries the flag
//! apart from the problem, so the one line a misconfigured process prints
//! always names what to change; a leaf module, so any module that checks
//! flags can use it.

use std::fmt::Display;

/// A flag (or flags, e.g. `--jwt-secret / --jwt-public-key`) whose value
/// cannot work. Reads as `--max-connections: must be at least 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {problem}")]
pub struct ConfigError {
    /// The flag to change, as the user types it.
    pub flag: &'static str,
    /// What is wrong with its value, and what to do.
    pub problem: String,
}

impl ConfigError {
    pub fn new(flag: &'static str, problem: impl Display) -> Self {
        Self {
            flag,
            problem: problem.to_string(),
        }
    }

    /// A closure for `map_err`: `flag` refused for the error's reason.
    pub fn of<E: Display>(flag: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::new(flag, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_flag_first() {
        let e = ConfigError::new("--max-connections", "must be at least 1");
        assert_eq!(e.to_string(), "--max-connections: must be at least 1");
        let e: Result<(), _> = Err("no such file").map_err(ConfigError::of("--tls-cert"));
        assert_eq!(e.unwrap_err().problem, "no such file");
    }
}
