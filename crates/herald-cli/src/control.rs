//! The Control API commands: `herald disconnect`, `revoke`, `follow`,
//! `unfollow`, `history` and `topics`, each one call to herald-publish's
//! `herald.v1.Control` service, its answer printed on stdout in one line
//! (history and topics: one line per event or topic).

use anyhow::Context;
use herald_proto::v1::{self, control_client::ControlClient, history_request::Target};
use tonic::transport::Channel;

use crate::api::{authorize, refused};
use crate::{output, sse};

/// Where herald-publish serves the Control API, and its token.
#[derive(Debug, clap::Args)]
pub(crate) struct Endpoint {
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
}

impl Endpoint {
    /// Calls `rpc` with `message` (and the token) on a fresh connection.
    async fn call<T, R, F>(
        &self,
        message: T,
        rpc: impl FnOnce(ControlClient<Channel>, tonic::Request<T>) -> F,
    ) -> anyhow::Result<R>
    where
        F: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let client = ControlClient::connect(self.addr.clone())
            .await
            .with_context(|| format!("cannot reach herald-publish at {}", self.addr))?;
        let mut request = tonic::Request::new(message);
        authorize(&mut request, self.api_token.as_deref())?;
        let answer = rpc(client, request).await.map_err(refused)?;
        Ok(answer.into_inner())
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct DisconnectArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Users whose streams end, on every edge.
    #[arg(value_name = "USER", required = true)]
    users: Vec<String>,
    /// Why, as the `herald.disconnect` event tells the client.
    #[arg(long)]
    reason: Option<String>,
    /// Tell the clients not to reconnect (`reconnect: false`: herald.js
    /// closes the stream for good); by default they reconnect.
    #[arg(long)]
    no_reconnect: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Users whose tokens issued until now (and tokens without `iat`) are
    /// refused on every edge; their streams end.
    #[arg(value_name = "USER", required = true)]
    users: Vec<String>,
    /// Why, as the `herald.disconnect` event and the 401 tell the client.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FollowArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// User whose streams (open ones and every later connect) follow the
    /// topics, or stop (repeatable).
    #[arg(long = "user", value_name = "USER", required = true)]
    users: Vec<String>,
    /// Topic (repeatable).
    #[arg(long = "topic", value_name = "TOPIC", required = true)]
    topics: Vec<String>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["user", "topic"])))]
pub(crate) struct HistoryArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The user whose stored events to read.
    #[arg(long)]
    user: Option<String>,
    /// The topic whose stored events to read.
    #[arg(long)]
    topic: Option<String>,
    /// Only events after this id (as a stream sends it); without it, the
    /// newest.
    #[arg(long)]
    since: Option<String>,
    /// Most events to print; without it, herald-publish's default.
    #[arg(long)]
    limit: Option<u32>,
    /// One JSON object per event: `{"id":…,"event":…,"data":…}`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TopicsArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only topics starting with this.
    #[arg(long)]
    prefix: Option<String>,
}

pub(crate) async fn disconnect(args: DisconnectArgs) -> anyhow::Result<()> {
    let request = v1::DisconnectRequest {
        user_ids: args.users,
        reason: args.reason.unwrap_or_default(),
        reconnect: !args.no_reconnect,
    };
    let answer = args
        .endpoint
        .call(request, |mut c, r| async move { c.disconnect(r).await })
        .await?;
    println!(
        "ended {} on {}",
        count(answer.streams, "stream"),
        count(answer.edges.into(), "edge")
    );
    Ok(())
}

pub(crate) async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let users = args.users.len() as u64;
    let request = v1::RevokeRequest {
        user_ids: args.users,
        issued_before_unix: 0,
        reason: args.reason.unwrap_or_default(),
    };
    let answer = args
        .endpoint
        .call(request, |mut c, r| async move { c.revoke(r).await })
        .await?;
    println!(
        "revoked {}; ended {}",
        count(users, "user"),
        count(answer.streams, "stream")
    );
    Ok(())
}

/// `herald follow` (`follow` true) or `herald unfollow`.
pub(crate) async fn follow(args: FollowArgs, follow: bool) -> anyhow::Result<()> {
    let (users, topics) = (args.users.len() as u64, args.topics.len() as u64);
    let request = v1::FollowRequest {
        user_ids: args.users,
        topics: args.topics,
    };
    let answer = args
        .endpoint
        .call(request, |mut c, r| async move {
            match follow {
                true => c.follow(r).await,
                false => c.unfollow(r).await,
            }
        })
        .await?;
    println!(
        "{} {} for {}; {} changed",
        if follow { "followed" } else { "unfollowed" },
        count(topics, "topic"),
        count(users, "user"),
        count(answer.streams, "live stream")
    );
    Ok(())
}

pub(crate) async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    // clap lets exactly one through.
    let target = (args.user.map(Target::UserId)).or(args.topic.map(Target::Topic));
    let request = v1::HistoryRequest {
        target,
        since: args.since.unwrap_or_default(),
        limit: args.limit.unwrap_or(0),
    };
    let answer = args
        .endpoint
        .call(request, |mut c, r| async move { c.history(r).await })
        .await?;
    for event in answer.events {
        let event = sse::Event {
            id: Some(event.id),
            event: match event.event.is_empty() {
                true => "message".into(),
                false => event.event,
            },
            data: event.data,
        };
        if !output::emit(&output::line(&event, args.json)) {
            return Ok(());
        }
    }
    if answer.truncated {
        eprintln!("truncated: there are more events than the limit returned");
    }
    Ok(())
}

pub(crate) async fn topics(args: TopicsArgs) -> anyhow::Result<()> {
    let request = v1::TopicsRequest {
        prefix: args.prefix.unwrap_or_default(),
        limit: 0,
    };
    let answer = args
        .endpoint
        .call(request, |mut c, r| async move { c.topics(r).await })
        .await?;
    for topic in answer.topics {
        let line = format!(
            "{} streams={} edges={}",
            topic.topic, topic.streams, topic.edges
        );
        if !output::emit(&line) {
            break;
        }
    }
    Ok(())
}

/// `1 stream`, `2 streams`.
fn count(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_english() {
        assert_eq!(count(0, "stream"), "0 streams");
        assert_eq!(count(1, "live stream"), "1 live stream");
        assert_eq!(count(7, "edge"), "7 edges");
    }
}
