//! Settings every service and region must agree on, checked against the
//! streams that exist. A service started with another shard count,
//! replica count, storage or region than the streams it finds would
//! store events where no edge reads them, or be refused by JetStream
//! for as long as it retried; it exits at start instead, naming the flag
//! and the value the streams have.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use herald_domain::region::Region;

use crate::history::{HistoryArgs, SHARDS_METADATA, stream_name};

/// A flag whose value disagrees with an existing stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub flag: &'static str,
    pub problem: String,
}

/// How `found` (an existing stream) disagrees with `wanted` (what this
/// service's flags make of it), if it does. Limits such as age or events
/// per subject may differ: the newer service's are applied.
pub fn disagreement(found: &stream::Config, wanted: &stream::Config) -> Option<Disagreement> {
    let name = &wanted.name;
    let differs = |flag: &'static str, given: String, found: String| {
        Some(Disagreement {
            flag,
            problem: format!(
                "{given} given, but the existing stream {name} has {found}: \
                 every service and region must use the same value \
                 (or remove the stream to start again)"
            ),
        })
    };
    if found.num_replicas != wanted.num_replicas {
        let (given, has) = (wanted.num_replicas, found.num_replicas);
        return differs("--history-replicas", given.to_string(), has.to_string());
    }
    if found.storage != wanted.storage {
        let name = |s: stream::StorageType| format!("{s:?}").to_lowercase();
        return differs(
            "--history-storage",
            name(wanted.storage),
            name(found.storage),
        );
    }
    let shards = |c: &stream::Config| c.metadata.get(SHARDS_METADATA).cloned();
    if let (Some(given), Some(has)) = (shards(wanted), shards(found))
        && given != has
    {
        return differs("--history-shards", given, format!("{has} shards"));
    }
    let cluster = |c: &stream::Config| c.placement.as_ref().and_then(|p| p.cluster.clone());
    if cluster(found) != cluster(wanted) {
        let name = |c: Option<String>| c.map_or("no region".to_owned(), |c| format!("`{c}`"));
        return differs(
            "--region",
            name(cluster(wanted)),
            format!("placement in {}", name(cluster(found))),
        );
    }
    None
}

/// How `history` and `region` (a service's flags) disagree with the
/// region's first history shard, if it exists and answers within a few
/// seconds (a JetStream still starting is not waited for: the service
/// that creates the streams checks them all).
pub async fn check_history(
    js: &jetstream::Context,
    history: &HistoryArgs,
    region: &Region,
) -> Option<Disagreement> {
    let wanted = history.stream_config(region, 0);
    let asking = js.get_stream(stream_name(region, 0));
    let found = tokio::time::timeout(Duration::from_secs(3), asking).await;
    match found {
        Ok(Ok(found)) => disagreement(&found.cached_info().config, &wanted),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Storage;

    fn args(shards: u16, replicas: u8, storage: Storage) -> HistoryArgs {
        HistoryArgs {
            history_shards: shards,
            history_storage: storage,
            history_replicas: replicas,
            history_max_per_subject: 100,
            history_max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn each_shared_setting_is_named_with_the_value_found() {
        let eu = Region::parse("eu").unwrap();
        let wanted = args(4, 3, Storage::File).stream_config(&eu, 0);
        let same = args(4, 3, Storage::File).stream_config(&eu, 0);
        assert_eq!(disagreement(&same, &wanted), None);
        let mut longer = same.clone();
        longer.max_age = Duration::from_secs(7200);
        assert_eq!(disagreement(&longer, &wanted), None, "limits may change");

        let cases = [
            (
                args(4, 1, Storage::File),
                "--history-replicas",
                "3 given",
                "has 1",
            ),
            (
                args(4, 3, Storage::Memory),
                "--history-storage",
                "file given",
                "has memory",
            ),
            (
                args(8, 3, Storage::File),
                "--history-shards",
                "4 given",
                "has 8 shards",
            ),
        ];
        for (found, flag, given, has) in cases {
            let found = found.stream_config(&eu, 0);
            let d = disagreement(&found, &wanted).expect(flag);
            assert_eq!(d.flag, flag);
            assert!(d.problem.contains(given), "{}", d.problem);
            assert!(d.problem.contains(has), "{}", d.problem);
            assert!(d.problem.contains("HERALD_H0_eu"), "{}", d.problem);
        }
        let unplaced = args(4, 3, Storage::File).stream_config(&Region::default(), 0);
        let mut elsewhere = unplaced.clone();
        elsewhere.name = wanted.name.clone();
        let d = disagreement(&elsewhere, &wanted).unwrap();
        assert_eq!(d.flag, "--region");
        assert!(
            d.problem.contains("placement in no region"),
            "{}",
            d.problem
        );
    }
}
