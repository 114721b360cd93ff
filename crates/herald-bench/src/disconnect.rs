//! Disconnect at scale: `--users` users each hold one stream, spread over
//! the edge and `--second-edge`; `Control.Disconnect` is called for them
//! in batches of `--batch` users, one call after another, and each
//! stream's end is timed from the answer of the call that named its
//! user (an end seen before the answer counts as 0). Reports the p50,
//! p99 and max of those delays, the streams the answers counted and the
//! streams that did not end within `--timeout`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use herald_proto::v1::DisconnectRequest;
use herald_proto::v1::control_client::ControlClient;

use crate::Target;
use crate::peer::Kind;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Users, one stream each.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Users named in one Disconnect call (at most 1,000).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// A second edge: every other stream opens there.
    #[arg(long)]
    second_edge: Option<SocketAddr>,
    /// Loopback source addresses to spread streams over (127.0.0.1..=N).
    #[arg(long, default_value_t = 8)]
    sources: u8,
}

#[derive(Debug, serde::Serialize)]
struct Figures {
    peer: Kind,
    scenario: &'static str,
    users: usize,
    edges: usize,
    calls: usize,
    streams_counted: u64,
    ended: usize,
    not_ended: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// When each stream ended, by user index.
type Ends = Arc<Mutex<Vec<Option<Instant>>>>;

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    if target.peer != Kind::Herald {
        bail!("Disconnect is Herald's Control API: --peer herald");
    }
    let ends: Ends = Arc::new(Mutex::new(vec![None; args.users]));
    let edges: Vec<SocketAddr> = std::iter::once(target.edge)
        .chain(args.second_edge)
        .collect();
    open_all(target, args, &edges, &ends).await?;
    eprintln!("{} streams open on {} edges", args.users, edges.len());

    let mut control = control_client(target).await?;
    let mut answered = vec![Instant::now(); args.users];
    let mut counted = 0;
    let mut calls = 0;
    for (first, users) in (0..args.users)
        .collect::<Vec<_>>()
        .chunks(args.batch)
        .map(|c| (c[0], c))
    {
        let request = DisconnectRequest {
            user_ids: users.iter().map(|i| user(*i)).collect(),
            reason: "bench".into(),
            reconnect: false,
        };
        let answer = control.disconnect(request).await?.into_inner();
        let at = Instant::now();
        answered[first..first + users.len()].fill(at);
        counted += answer.streams;
        calls += 1;
    }
    let deadline = Instant::now() + target.timeout;
    while ends.lock().unwrap().iter().any(Option::is_none) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ends = ends.lock().unwrap().clone();
    let mut delays: Vec<f64> = ends
        .iter()
        .zip(&answered)
        .filter_map(|(end, answer)| {
            let end = (*end)?;
            Some(end.saturating_duration_since(*answer).as_secs_f64() * 1000.0)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| {
        delays
            .get(((delays.len() as f64 * q) as usize).min(delays.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let figures = Figures {
        peer: target.peer,
        scenario: "disconnect",
        users: args.users,
        edges: edges.len(),
        calls,
        streams_counted: counted,
        ended: delays.len(),
        not_ended: args.users - delays.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: delays.last().copied().unwrap_or(f64::NAN),
    };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

fn user(i: usize) -> String {
    format!("disconnect-{i}")
}

/// Opens one stream per user, alternating between `edges`; each records
/// when it ended.
async fn open_all(
    target: &Target,
    args: &Args,
    edges: &[SocketAddr],
    ends: &Ends,
) -> anyhow::Result<()> {
    for (e, edge) in edges.iter().enumerate() {
        let mine: Vec<usize> = (e..args.users).step_by(edges.len()).collect();
        let request = |k: usize| target.sse_request(&user(mine[k]), None);
        let on_data = |k: usize| {
            let (ends, i) = (ends.clone(), mine[k]);
            move |data: &[u8]| {
                if data.starts_with(b"{\"reason\"") {
                    ends.lock().unwrap()[i] = Some(Instant::now());
                }
            }
        };
        let readers = crate::stream::open_many(
            *edge,
            crate::stream::CONNECTING,
            mine.len(),
            args.sources,
            request,
            on_data,
        );
        for reader in readers.await? {
            drop(reader); // detached: each reads until its stream ends
        }
    }
    Ok(())
}

async fn control_client(
    target: &Target,
) -> anyhow::Result<
    ControlClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            impl tonic::service::Interceptor,
        >,
    >,
> {
    let channel = tonic::transport::Channel::from_shared(target.publish.clone())?
        .connect()
        .await?;
    let bearer: Option<tonic::metadata::MetadataValue<_>> = match &target.api_token {
        Some(token) => Some(format!("Bearer {token}").parse()?),
        None => None,
    };
    Ok(ControlClient::with_interceptor(
        channel,
        move |mut r: tonic::Request<()>| {
            if let Some(bearer) = &bearer {
                r.metadata_mut().insert("authorization", bearer.clone());
            }
            Ok(r)
        },
    ))
}
