//! `herald publish --ndjson`: many events from standard input, one
//! `PublishRequest` in proto3 JSON per line (as HTTP publish takes it),
//! sent through `PublishBatch` in chunks. Each line that fails is reported
//! on stderr with its line number; the exit code says whether any did.

use std::io::BufRead;

use herald_proto::json;
use herald_proto::v1::{PublishBatchRequest, PublishRequest, PublishResult};
use prost::Message;

/// Stays well under herald-publish's default `--max-batch-bytes` (4 MiB).
const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Why a line was not sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LineError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Mapping(#[from] json::JsonError),
}

/// A line's number and its request, or why it was not sent.
pub(crate) type Line = (usize, Result<PublishRequest, LineError>);

/// Parses one NDJSON line (1-based `number`); blank lines are skipped.
pub(crate) fn parse_line(number: usize, text: &str) -> Option<Line> {
    if text.trim().is_empty() {
        return None;
    }
    let parsed = || Ok(serde_json::from_str::<json::PublishRequest>(text)?.try_into()?);
    Some((number, parsed()))
}

/// What a run did, for the summary and the exit code.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub published: usize,
    pub failed: usize,
}

/// Reads `input` to its end, sending chunks of at most `chunk` requests
/// (and [`MAX_CHUNK_BYTES`]) through `send`; reports failed lines on stderr.
pub(crate) async fn run<F, Fut>(
    input: impl BufRead,
    chunk: usize,
    mut send: F,
) -> anyhow::Result<Tally>
where
    F: FnMut(PublishBatchRequest) -> Fut,
    Fut: Future<Output = Result<Vec<PublishResult>, tonic::Status>>,
{
    let mut tally = Tally::default();
    let mut pending: Vec<(usize, PublishRequest)> = Vec::new();
    let mut bytes = 0;
    for (i, text) in input.lines().enumerate() {
        let Some((number, parsed)) = parse_line(i + 1, &text?) else {
            continue;
        };
        let request = match parsed {
            Ok(request) => request,
            Err(e) => {
                fail(&mut tally, number, e);
                continue;
            }
        };
        bytes += request.encoded_len();
        pending.push((number, request));
        if pending.len() >= chunk || bytes >= MAX_CHUNK_BYTES {
            flush(&mut pending, &mut send, &mut tally).await;
            bytes = 0;
        }
    }
    flush(&mut pending, &mut send, &mut tally).await;
    Ok(tally)
}

async fn flush<F, Fut>(pending: &mut Vec<(usize, PublishRequest)>, send: &mut F, tally: &mut Tally)
where
    F: FnMut(PublishBatchRequest) -> Fut,
    Fut: Future<Output = Result<Vec<PublishResult>, tonic::Status>>,
{
    if pending.is_empty() {
        return;
    }
    let (numbers, requests): (Vec<usize>, Vec<PublishRequest>) = pending.drain(..).unzip();
    match send(PublishBatchRequest { requests }).await {
        Ok(results) => {
            for (number, result) in numbers.into_iter().zip(results) {
                if result.error.is_empty() {
                    tally.published += 1;
                } else {
                    fail(tally, number, result.error);
                }
            }
        }
        Err(status) => {
            let error = herald_proto::result_error::error_text(&status);
            for number in numbers {
                fail(tally, number, &error);
            }
        }
    }
}

fn fail(tally: &mut Tally, number: usize, error: impl std::fmt::Display) {
    tally.failed += 1;
    eprintln!("line {number}: {error}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_go_out_in_chunks_and_failures_keep_their_line_numbers() {
        let input = "{\"topic\":\"a\",\"data\":\"1\"}\n\n{\"topic\":\n{\"topic\":\"a\",\"data\":\"bad\"}\n{\"topic\":\"a\"}\n";
        let mut chunks = Vec::new();
        let tally = run(input.as_bytes(), 2, |batch: PublishBatchRequest| {
            chunks.push(batch.requests.len());
            let results = batch.requests.iter().map(|r| PublishResult {
                response: None,
                error: if r.data == "bad" {
                    "INVALID_ARGUMENT: no".into()
                } else {
                    String::new()
                },
            });
            std::future::ready(Ok(results.collect()))
        })
        .await
        .unwrap();
        assert_eq!(chunks, [2, 1]);
        assert_eq!(
            tally,
            Tally {
                published: 2,
                failed: 2
            }
        );
        assert!(matches!(parse_line(3, "{\"topic\":"), Some((3, Err(_)))));
        assert!(parse_line(2, "  ").is_none());
    }
}
