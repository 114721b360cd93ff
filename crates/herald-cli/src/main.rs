//! `herald`: the operator CLI. `herald publish` calls the Publish API
//! (`--ndjson`: many events from stdin through `PublishBatch`, see [`ndjson`]);
//! `herald presence` asks who is connected; `herald token` mints an HS256
//! client token for development and tests; `herald subscribe` tails a
//! stream from the edge like a browser (see [`subscribe`]); `herald
//! disconnect`, `revoke`, `follow`, `unfollow`, `history` and `topics`
//! call herald-publish's Control API (see [`control`]).
//!
//! # Layout
//! - [`api`]: the token on every gRPC call, and a refusal as an error.
//! - [`control`]: the Control API commands.
//! - [`ndjson`]: `publish --ndjson`, many events from stdin.
//! - [`token`](mod@token): minting HS256 client tokens.
//! - [`subscribe`]: the subscribe loop; [`connect`] opens one stream,
//!   [`sse`] parses it, [`output`] prints events, [`reconnect`] decides
//!   when to come back.

use std::process::ExitCode;
use std::time::Duration;

mod api;
mod connect;
mod control;
mod lifecycle;
mod ndjson;
mod output;
mod reconnect;
mod sse;
mod subscribe;
mod token;

use anyhow::Context;
use api::{authorize, refused};
use clap::{Parser, Subcommand};
use herald_domain::claims::{Audience, Claims};
use herald_nats::duration::parse_duration;
use herald_proto::v1::{
    GetPresenceRequest, OfflinePolicy, PublishRequest, presence_client::PresenceClient,
    publish_request::Target, publisher_client::PublisherClient,
};

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Herald operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish one event to users or a topic through herald-publish.
    Publish(PublishArgs),
    /// Show users' connections, or cluster totals with no user given.
    Presence(PresenceArgs),
    /// Print an HS256 client token (for development; production tokens come from your auth service).
    Token(TokenArgs),
    /// Tail a user's stream (and topics) from an edge, reconnecting like a browser.
    Subscribe(subscribe::SubscribeArgs),
    /// End users' streams on every edge, with a `herald.disconnect` event.
    Disconnect(control::DisconnectArgs),
    /// Refuse users' current tokens on every edge, and end their streams.
    Revoke(control::RevokeArgs),
    /// Make users' streams follow topics, now and at every later connect.
    Follow(control::FollowArgs),
    /// Stop what `herald follow` started.
    Unfollow(control::FollowArgs),
    /// Print a user's or a topic's stored events.
    History(control::HistoryArgs),
    /// List the topics live streams follow, with their streams and edges.
    Topics(control::TopicsArgs),
    /// Tail streams' connects and disconnects (edges' --lifecycle-events), from NATS.
    Lifecycle(lifecycle::LifecycleArgs),
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// herald-publish gRPC address.
    #[arg(
        long,
        env = "HERALD_PUBLISH_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    /// API token, if herald-publish requires one.
    #[arg(long, env = "HERALD_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Target user (repeatable).
    #[arg(
        long = "user",
        required_unless_present_any = ["topic", "ndjson"],
        conflicts_with = "topic"
    )]
    users: Vec<String>,
    /// Target topic.
    #[arg(long)]
    topic: Option<String>,
    /// SSE event type; default `message`.
    #[arg(long, default_value = "")]
    event: String,
    /// Event payload (UTF-8).
    #[arg(long, required_unless_present = "ndjson")]
    data: Option<String>,
    /// Read events from stdin instead, one PublishRequest in proto3 JSON
    /// per line (e.g. `{"users":{"userIds":["alice"]},"data":"hi"}`), and
    /// send them through PublishBatch; failed lines are reported with their
    /// line number on stderr, and the exit code is 1 if any failed.
    #[arg(long, conflicts_with_all = ["users", "topic", "data"])]
    ndjson: bool,
    /// With --ndjson: requests per PublishBatch call.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..))]
    batch_size: u16,
    /// No history, no id, no replay.
    #[arg(long)]
    ephemeral: bool,
    /// Names this event across retries: publishing again with the same key
    /// within two minutes stores it once.
    #[arg(long, default_value = "")]
    idempotency_key: String,
    /// For users who are not connected: store (for replay), drop, or
    /// fallback (store and queue for mobile push).
    #[arg(long, default_value = "store")]
    offline: Policy,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Policy {
    Store,
    Drop,
    Fallback,
}

#[derive(Debug, clap::Args)]
struct PresenceArgs {
    /// herald-presence gRPC address.
    #[arg(
        long,
        env = "HERALD_PRESENCE_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    addr: String,
    /// API token, if herald-presence requires one.
    #[arg(long, env = "HERALD_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Users to look up.
    users: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// User id (`sub`).
    #[arg(long)]
    sub: String,
    /// Topic the holder may follow (repeatable; a trailing `*` is a prefix).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Lifetime, e.g. `1h`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// HS256 secret, the edge's --jwt-secret.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// `aud` claim, for an edge started with --jwt-audience.
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    aud: Option<String>,
    /// `iss` claim, for an edge started with --jwt-issuer.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    iss: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Publish(args) => publish(args).await?,
        Command::Presence(args) => presence(args).await?,
        Command::Token(args) => token(&args)?,
        Command::Disconnect(args) => control::disconnect(args).await?,
        Command::Revoke(args) => control::revoke(args).await?,
        Command::Follow(args) => control::follow(args, true).await?,
        Command::Unfollow(args) => control::follow(args, false).await?,
        Command::History(args) => control::history(args).await?,
        Command::Topics(args) => control::topics(args).await?,
        Command::Lifecycle(args) => {
            let stop = herald_core::shutdown::on_signal();
            lifecycle::tail(args, stop).await?
        }
        Command::Subscribe(args) => {
            // Ctrl-C or SIGTERM is how a tail ends: not an error.
            let stop = herald_core::shutdown::on_signal();
            return Ok(tokio::select! {
                code = subscribe::run(args) => code,
                () = stop.cancelled() => ExitCode::SUCCESS,
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let mut client = PublisherClient::connect(args.addr.clone())
        .await
        .with_context(|| format!("cannot reach herald-publish at {}", args.addr))?;
    if args.ndjson {
        return publish_ndjson(client, &args).await;
    }
    let target = match args.topic {
        Some(topic) => Target::Topic(topic),
        None => Target::users(args.users),
    };
    let mut request = tonic::Request::new(PublishRequest {
        target: Some(target),
        event: args.event,
        data: args.data.unwrap_or_default(),
        ephemeral: args.ephemeral,
        offline: match args.offline {
            Policy::Store => OfflinePolicy::Store,
            Policy::Drop => OfflinePolicy::Drop,
            Policy::Fallback => OfflinePolicy::Fallback,
        } as i32,
        idempotency_key: args.idempotency_key,
    });
    authorize(&mut request, args.api_token.as_deref())?;
    let response = client.publish(request).await.map_err(refused)?;
    let response = response.into_inner();
    println!(
        "published{}",
        if response.event_id.is_empty() {
            String::new()
        } else {
            format!(" id={}", response.event_id)
        }
    );
    for receipt in &response.receipts {
        let outcome = receipt.outcome().as_str_name();
        let outcome = outcome.strip_prefix("OUTCOME_").unwrap_or(outcome);
        let online = if receipt.online { "online" } else { "offline" };
        println!("  {}: {online}, {outcome}", receipt.user_id);
    }
    Ok(())
}

async fn publish_ndjson(
    client: PublisherClient<tonic::transport::Channel>,
    args: &PublishArgs,
) -> anyhow::Result<()> {
    let token = args.api_token.as_deref();
    let send = |batch| {
        let mut client = client.clone();
        let mut request = tonic::Request::new(batch);
        let authorized = authorize(&mut request, token);
        async move {
            authorized.map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            let answer = client.publish_batch(request).await?;
            Ok(answer.into_inner().results)
        }
    };
    let stdin = std::io::stdin().lock();
    let tally = ndjson::run(stdin, usize::from(args.batch_size), send).await?;
    println!("published {}, failed {}", tally.published, tally.failed);
    if tally.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn presence(args: PresenceArgs) -> anyhow::Result<()> {
    let mut client = PresenceClient::connect(args.addr.clone())
        .await
        .with_context(|| format!("cannot reach herald-presence at {}", args.addr))?;
    if args.users.is_empty() {
        let mut request = tonic::Request::new(herald_proto::v1::StatsRequest {});
        authorize(&mut request, args.api_token.as_deref())?;
        let stats = client.stats(request).await.map_err(refused)?.into_inner();
        println!(
            "{} connections, {} users online",
            stats.connections, stats.users_online
        );
        return Ok(());
    }
    let mut request = tonic::Request::new(GetPresenceRequest {
        user_ids: args.users,
    });
    authorize(&mut request, args.api_token.as_deref())?;
    let answer = client
        .get_presence(request)
        .await
        .map_err(refused)?
        .into_inner();
    for user in answer.users {
        let nodes = user.nodes.join(", ");
        println!("{}: {} connections {nodes}", user.user_id, user.connections);
    }
    Ok(())
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let claims = Claims {
        aud: args.aud.clone().map(Audience::One),
        iss: args.iss.clone(),
        ..Claims::new(&args.sub)
            .topics(&args.topics)
            .valid_for(args.ttl)
    };
    println!("{}", token::hs256(&claims, &args.secret)?);
    Ok(())
}
