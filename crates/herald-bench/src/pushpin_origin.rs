//! The GRIP origin behind Pushpin in the benchmark (bench/pushpin.conf):
//! Pushpin proxies every stream request here, and this answers it with
//! GRIP instructions to hold the connection as an SSE stream on the
//! request's `?channel=`, with a heartbeat every `--keep-alive-secs` (15 s,
//! as Herald's edge and Nchan in bench/nchan.conf). It keeps nothing: a
//! `Last-Event-ID` gets no replay (GRIP leaves replay to the origin's own
//! store, and this one has none).
//!
//! Pushpin's built-in `test` route target answers `?channel=` holds too,
//! with no origin process, but as `text/plain` (an EventSource refuses it)
//! and without heartbeats, so it is not what a deployment runs.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, header};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where Pushpin's routes point (bench/pushpin.routes).
    #[arg(long, default_value = "127.0.0.1:27080")]
    listen: SocketAddr,
    /// Seconds between heartbeats Pushpin writes on every held stream.
    #[arg(long, default_value_t = 15)]
    keep_alive_secs: u32,
}

/// Serves until killed; each connection (zurl keeps a few alive) on its
/// own task.
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    // A storm's reconnects reach the origin as fast as Pushpin takes them
    // (zurl opens as many connections as requests in flight): the backlog
    // Herald's edge and nginx listen with, not std's 128, whose overflow
    // would show up as Pushpin's 502s and retransmitted SYNs.
    let socket = if args.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(args.listen)?;
    let listener = socket.listen(4096)?;
    eprintln!("GRIP origin on {}", listener.local_addr()?);
    let keep_alive = args.keep_alive_secs;
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or the like: say so, let it pass.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let answer = hold(request.uri().query().unwrap_or(""), keep_alive);
            async move { Ok::<_, Infallible>(answer) }
        });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(socket);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// The answer to a stream request with `query`: hold it on its channel,
/// or 400 if the query names none (or one that would not survive as a
/// `Grip-Channel` value: `,` and `;` separate channels and parameters).
fn hold(query: &str, keep_alive_secs: u32) -> Response<Full<Bytes>> {
    let channel = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "channel")
        .map(|(_, value)| value.into_owned())
        .filter(|c| !c.is_empty() && !c.contains([',', ';']));
    let Some(channel) = channel else {
        return refuse("?channel= is missing or holds ',' or ';'");
    };
    let answer = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("grip-hold", "stream")
        .header("grip-channel", channel)
        // A comment line, written every interval whether or not events
        // flow (`mode=interval`), as Herald and Nchan write theirs.
        .header(
            "grip-keep-alive",
            format!(": heartbeat\\n\\n; format=cstring; timeout={keep_alive_secs}; mode=interval"),
        )
        // What the stream opens with, before Pushpin holds it.
        .body(Full::new(Bytes::from_static(b": open\n\n")));
    answer.unwrap_or_else(|_| refuse("the channel is not a valid header value"))
}

fn refuse(why: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(why.as_bytes())));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn header<'a>(response: &'a Response<Full<Bytes>>, name: &str) -> &'a str {
        response.headers()[name].to_str().unwrap()
    }

    #[tokio::test]
    async fn a_stream_request_is_held_on_its_channel_with_heartbeats() {
        let response = hold("channel=u.bench-7&x=1", 15);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), "text/event-stream");
        assert_eq!(header(&response, "grip-hold"), "stream");
        assert_eq!(header(&response, "grip-channel"), "u.bench-7");
        assert_eq!(
            header(&response, "grip-keep-alive"),
            r": heartbeat\n\n; format=cstring; timeout=15; mode=interval"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b": open\n\n");
    }

    #[test]
    fn a_channel_is_percent_decoded() {
        let response = hold("channel=t.a%20b", 15);
        assert_eq!(header(&response, "grip-channel"), "t.a b");
    }

    #[test]
    fn a_request_without_a_usable_channel_is_refused() {
        for query in [
            "",
            "channel=",
            "other=1",
            "channel=a,b",
            "channel=a;prev-id=1",
            "channel=a%0Ab",
        ] {
            let response = hold(query, 15);
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
            assert!(!response.headers().contains_key("grip-hold"), "{query}");
        }
    }
}
