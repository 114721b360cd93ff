//! Regions: where an event was stored, as its subjects say it.
//!
//! In a supercluster (one NATS cluster per region, joined by gateways)
//! each region stores the events published in it, in its own history
//! streams, so that a region keeps storing when another is lost and a
//! local publish never waits on a far one. An event's *origin* is the
//! region that stored it, and it travels on its origin's live subject:
//! the user or topic subject with the region as a last token
//! (`herald.u.alice.eu`). A stream follows a user or topic on every
//! region's origin subject, and its event ids hold one position per
//! origin subject: each region's history has its own sequence numbers.
//! NATS's interest-only gateways still carry an event to a region only
//! when a stream there follows it.
//!
//! The unnamed region (the default, one region) adds no token: its
//! origin subject is the live subject itself, as before regions existed.

use std::fmt;

/// Longest region name, in bytes.
pub const MAX_REGION_LEN: usize = 32;

/// A region's name: the NATS cluster's name there, one subject token of
/// lower-case letters, digits and `-`; empty for the unnamed region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

/// Why a region name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "region `{0}` must be 1 to {MAX_REGION_LEN} lower-case letters, digits or '-', \
     starting with a letter or digit (it names the region's NATS cluster)"
)]
pub struct RegionError(pub String);

impl Region {
    /// A named region; also accepts the empty name (the unnamed region).
    pub fn parse(raw: &str) -> Result<Self, RegionError> {
        let valid = raw.len() <= MAX_REGION_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-');
        match valid {
            true => Ok(Self(raw.to_owned())),
            false => Err(RegionError(raw.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the unnamed region of a single-region deployment.
    pub fn is_unnamed(&self) -> bool {
        self.0.is_empty()
    }

    /// The subject on which events stored in this region travel for
    /// `live` (a user or topic subject).
    pub fn origin(&self, live: &str) -> String {
        match self.is_unnamed() {
            true => live.to_owned(),
            false => format!("{live}.{}", self.0),
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The region an origin subject (`herald.<kind>.<token>[.<region>]`)
/// names: the unnamed one when it has no region token.
pub fn of_origin(origin: &str) -> Region {
    let mut tokens = origin.splitn(4, '.');
    Region(tokens.nth(3).unwrap_or_default().to_owned())
}

/// The live subject of an origin subject: without its region token.
pub fn live_of(origin: &str) -> &str {
    match origin.match_indices('.').nth(2) {
        Some((at, _)) => &origin[..at],
        None => origin,
    }
}

/// Every region's origin subject of `live`, in `regions`' order.
pub fn origins<'a>(live: &'a str, regions: &'a [Region]) -> impl Iterator<Item = String> + 'a {
    regions.iter().map(move |region| region.origin(live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_safe_token() {
        for good in ["", "eu", "us-east-1", "a", "0"] {
            assert_eq!(Region::parse(good).unwrap().as_str(), good);
        }
        let long = "a".repeat(MAX_REGION_LEN + 1);
        for bad in [
            "EU",
            "eu.west",
            "eu*",
            ">",
            "e u",
            "-eu",
            "é",
            "eu\n",
            long.as_str(),
        ] {
            assert!(Region::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origin_subjects_map_back_to_region_and_live_subject() {
        let eu = Region::parse("eu").unwrap();
        assert_eq!(eu.origin("herald.u.alice"), "herald.u.alice.eu");
        assert_eq!(of_origin("herald.u.alice.eu"), eu);
        assert_eq!(live_of("herald.u.alice.eu"), "herald.u.alice");
        let unnamed = Region::default();
        assert_eq!(unnamed.origin("herald.t.news"), "herald.t.news");
        assert_eq!(of_origin("herald.t.news"), unnamed);
        assert_eq!(live_of("herald.t.news"), "herald.t.news");
        let regions = [eu, Region::parse("us").unwrap()];
        let all: Vec<String> = origins("herald.t.x", &regions).collect();
        assert_eq!(all, ["herald.t.x.eu", "herald.t.x.us"]);
    }
}
