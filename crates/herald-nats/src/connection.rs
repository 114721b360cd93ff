//! Connecting to NATS the same way in every service.
//!
//! Each service presents its own credentials (user and password, an NKey,
//! or a credentials file) and takes its replies on its own inbox prefix,
//! `_INBOX_<service>` (see [`inbox_prefix`]), so that NATS permissions can
//! give each service the replies meant for it and nobody else's
//! (deploy/nats/auth.conf, docs/operations.md).

use std::path::PathBuf;
use std::time::Duration;

use crate::keys::KeyLogin;

/// Why a NATS connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{url:?} is not a NATS URL: {source}")]
    BadUrl { url: String, source: std::io::Error },
    #[error("{0}")]
    Credentials(&'static str),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
}

/// A secret read from a flag or the environment; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(redacted)")
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// How a service proves itself to NATS and checks the server: TLS and
/// credentials. Every flag is optional; none gives a plain connection.
/// User and password may also come in the URLs (`nats://user:pass@host`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsSecurity {
    /// PEM CA certificates to verify NATS servers with; turns TLS on.
    #[arg(long, env = "HERALD_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// PEM client certificate for NATS (mutual TLS), with --nats-tls-key.
    #[arg(long, env = "HERALD_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,

    /// PEM private key of --nats-tls-cert.
    #[arg(long, env = "HERALD_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,

    /// NATS credentials file (user JWT and NKey seed, as `nsc` writes it).
    #[arg(long, env = "HERALD_NATS_CREDS", conflicts_with = "nats_nkey")]
    pub nats_creds: Option<PathBuf>,

    /// File holding an NKey user seed (`SU…`) to authenticate with.
    #[arg(long, env = "HERALD_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,

    /// NATS user, with --nats-password (each service has its own: see
    /// docs/operations.md).
    #[arg(
        long,
        env = "HERALD_NATS_USER",
        requires = "nats_password",
        conflicts_with_all = ["nats_creds", "nats_nkey"]
    )]
    pub nats_user: Option<String>,

    /// Password of --nats-user. Prefer the environment variable: a flag
    /// shows in the process list.
    #[arg(
        long,
        env = "HERALD_NATS_PASSWORD",
        requires = "nats_user",
        hide_env_values = true
    )]
    pub nats_password: Option<Password>,

    /// Connect only to the --nats-url servers, never to those the cluster
    /// advertises (for a service outside the cluster's network, where the
    /// addresses NATS servers advertise do not lead to them).
    #[arg(long, env = "HERALD_NATS_IGNORE_DISCOVERED_SERVERS")]
    pub nats_ignore_discovered_servers: bool,
}

/// Options that log in with the key files of `security`, read again at
/// every connect (async-nats calls back with each server's nonce).
fn keyed_options(security: NatsSecurity) -> async_nats::ConnectOptions {
    let security = std::sync::Arc::new(security);
    async_nats::ConnectOptions::with_auth_callback(move |nonce| {
        let security = security.clone();
        async move {
            let login = security
                .key_login()
                .map_err(async_nats::AuthError::new)?
                .ok_or_else(|| async_nats::AuthError::new("no key file"))?;
            let mut auth = async_nats::Auth::new();
            let signature = login.key().sign(&nonce);
            auth.signature = Some(signature.map_err(async_nats::AuthError::new)?);
            match login {
                KeyLogin::Jwt { jwt, .. } => auth.jwt = Some(jwt),
                KeyLogin::Nkey(key) => auth.nkey = Some(key.public_key()),
            }
            Ok(auth)
        }
    })
}

/// User and password, or a token (a user name without a password, as
/// NATS URLs carry one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    UserPassword(String, Password),
    Token(Password),
}

impl NatsSecurity {
    /// Connect options with TLS and the key files; a key file is read now
    /// (to fail fast) and again at every connect.
    /// The key in the file `--nats-creds` or `--nats-nkey` names, as it is
    /// now (read at every connect).
    pub fn key_login(&self) -> Result<Option<KeyLogin>, ConnectError> {
        let creds = self.nats_creds.as_deref();
        Ok(KeyLogin::read(creds, self.nats_nkey.as_deref())?)
    }

    fn options(&self) -> Result<async_nats::ConnectOptions, ConnectError> {
        let mut options = match self.key_login()? {
            Some(_) => keyed_options(self.clone()),
            None => async_nats::ConnectOptions::new(),
        };
        if self.nats_ignore_discovered_servers {
            options = options.ignore_discovered_servers();
        }
        if let Some(ca) = &self.nats_tls_ca {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            options = options
                .require_tls(true)
                .add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }

    /// The user and password (or token) to log in with: from the flags, or
    /// from the URLs. async-nats ignores credentials in a URL, which would
    /// connect anonymously without a word, so they are taken out here.
    fn login(&self, addrs: &[async_nats::ServerAddr]) -> Result<Option<Login>, ConnectError> {
        let mut from_urls = addrs.iter().filter_map(login_of);
        let first = from_urls.next();
        if let Some(first) = &first
            && from_urls.any(|other| &other != first)
        {
            return Err(ConnectError::Credentials(
                "the URLs carry different credentials; give them once, with --nats-user and --nats-password",
            ));
        }
        let other_login = self.nats_creds.is_some() || self.nats_nkey.is_some();
        match (&self.nats_user, &self.nats_password, first) {
            (Some(_), _, Some(_)) => Err(ConnectError::Credentials(
                "credentials both in the URL and in --nats-user; give them once",
            )),
            (_, _, Some(_)) if other_login => Err(ConnectError::Credentials(
                "credentials in the URL beside --nats-creds or --nats-nkey; use one way to log in",
            )),
            (Some(user), Some(password), None) => {
                Ok(Some(Login::UserPassword(user.clone(), password.clone())))
            }
            // clap requires both flags together; a library caller may not.
            (Some(_), None, None) | (None, Some(_), _) => Err(ConnectError::Credentials(
                "--nats-user and --nats-password go together",
            )),
            (None, None, from_url) => Ok(from_url),
        }
    }
}

/// The credentials in one URL, percent-decoded.
fn login_of(addr: &async_nats::ServerAddr) -> Option<Login> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(addr.username()?);
    match addr.password().map(decode).filter(|p| !p.is_empty()) {
        Some(password) => Some(Login::UserPassword(user, Password::new(password))),
        None => Some(Login::Token(Password::new(user))),
    }
}

/// `addr` without the user and password it may carry.
fn without_login(addr: async_nats::ServerAddr) -> async_nats::ServerAddr {
    if addr.username().is_none() {
        return addr;
    }
    let mut url = addr.clone().into_inner();
    let cleared = url.set_username("").is_ok() && url.set_password(None).is_ok();
    match async_nats::ServerAddr::from_url(url) {
        Ok(bare) if cleared => bare,
        _ => addr,
    }
}

/// The inbox prefix of a service: replies to its requests (JetStream API
/// answers, publish acknowledgements) arrive on `<prefix>.…`. Each service
/// has its own, outside `_INBOX.>`, so NATS permissions can let it read
/// its own replies and no one else's. `service` is the first word of the
/// connection name (`herald-edge edge-1` → `_INBOX_herald-edge`).
pub fn inbox_prefix(name: &str) -> String {
    let service = name.split(' ').next().unwrap_or_default();
    let token: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("_INBOX_{token}")
}

/// The servers to connect to, without the credentials their URLs may
/// carry, and the user and password (or token) to log in with, from the
/// URLs or the flags (never both). Other credentials (TLS, NKey, creds
/// file) stay in `security`.
pub fn servers(
    urls: &[String],
    security: &NatsSecurity,
) -> Result<(Vec<async_nats::ServerAddr>, Option<Login>), ConnectError> {
    let addrs = urls
        .iter()
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|source| ConnectError::BadUrl {
                    url: redact(url),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let login = security.login(&addrs)?;
    Ok((addrs.into_iter().map(without_login).collect(), login))
}

/// `url` without its credentials, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Counts the moments after which live messages may have been missed: the
/// connection dropped, or the client discarded messages of a subscription
/// that fell behind. Core NATS does not redeliver, so whoever promises
/// "nothing lost" must react to a change (the edge ends its streams, whose
/// clients then resume from their cursors).
pub type Losses = tokio::sync::watch::Receiver<u64>;

/// Where [`Losses`] are counted: every NATS connection of a service bumps
/// the same counter, and `subscribe` gives a watcher.
pub type LossCounter = tokio::sync::watch::Sender<u64>;

/// Connects to the first reachable of `urls`, failing fast at start-up so a
/// wrong `--nats-url` is reported at once rather than retried forever.
/// Once connected, the client reconnects on its own (to any of `urls` and
/// the servers they advertise) for as long as needed.
pub async fn connect(
    urls: &[String],
    security: &NatsSecurity,
    name: &str,
) -> Result<(async_nats::Client, LossCounter), ConnectError> {
    let (options, addrs) = options(urls, security, name).await?;
    let losses = LossCounter::new(0);
    let counter = losses.clone();
    let (lame_duck, lame_ducks) = tokio::sync::mpsc::channel(1);
    let client = options
        .event_callback(move |event| {
            let losses = counter.clone();
            let lame_duck = lame_duck.clone();
            async move {
                tracing::info!(%event, "nats connection event");
                match event {
                    async_nats::Event::Disconnected | async_nats::Event::SlowConsumer(_) => {
                        losses.send_modify(|n| *n += 1)
                    }
                    async_nats::Event::LameDuckMode => {
                        let _ = lame_duck.try_send(());
                    }
                    _ => {}
                }
            }
        })
        .connect(addrs.as_slice())
        .await?;
    tokio::spawn(leave_lame_ducks(client.clone(), lame_ducks));
    Ok((client, losses))
}

/// Moves the connection off a server that announced lame duck mode (a
/// NATS upgrade) at a random moment within [`LAME_DUCK_SPREAD`], before
/// the server closes it, so that its clients do not all move at once
/// and the server can exit at the end of its grace period. Ends when the
/// connection does (drained or closed: the event channel closes).
async fn leave_lame_ducks(
    client: async_nats::Client,
    mut notices: tokio::sync::mpsc::Receiver<()>,
) {
    while notices.recv().await.is_some() {
        tokio::time::sleep(LAME_DUCK_SPREAD.mul_f64(fastrand::f64())).await;
        if let Err(e) = client.force_reconnect().await {
            tracing::warn!(error = %e, "cannot leave a NATS server in lame duck mode");
        }
    }
}

/// A connection leaves a server in lame duck mode within this; under the
/// server's `lame_duck_grace_period` (10 s by default).
pub const LAME_DUCK_SPREAD: Duration = Duration::from_secs(5);

/// How every service connects: credentials, TLS, its name and inbox
/// prefix, reconnecting for as long as needed; and the servers, without
/// the credentials their URLs may carry (the client logs the addresses it
/// connects to). [`connect`] adds an event callback that counts losses;
/// a caller that needs other events adds its own.
pub async fn options(
    urls: &[String],
    security: &NatsSecurity,
    name: &str,
) -> Result<(async_nats::ConnectOptions, Vec<async_nats::ServerAddr>), ConnectError> {
    let (addrs, login) = servers(urls, security)?;
    let mut options = security.options()?;
    options = match login {
        Some(Login::UserPassword(user, password)) => options.user_and_password(user, password.0),
        Some(Login::Token(token)) => options.token(token.0),
        None => options,
    };
    let options = options
        .name(name)
        .custom_inbox_prefix(inbox_prefix(name))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    Ok((options, addrs))
}

/// Waits for one round trip to the server. The server handles a client's
/// operations in order, so once this returns it has processed everything
/// this client sent before, e.g. a new subscription. (`flush` only empties
/// the client's write buffer.) The request goes to a subject nobody serves,
/// so the server itself answers at once with "no responders".
pub async fn round_trip(client: &async_nats::Client) -> Result<(), async_nats::RequestError> {
    use async_nats::RequestErrorKind;
    let subject = format!(
        "_herald.ping.{}",
        client.new_inbox().rsplit('.').next().unwrap_or("x")
    );
    match client.request(subject, bytes::Bytes::new()).await {
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()), // someone answered: still a round trip
    }
}

/// Round trips shared by everyone who asks while one is under way: each
/// caller is answered by the first round trip that starts after it asked,
/// so a burst of new subscriptions (an edge's audience coming back at
/// once) waits for a few pings instead of sending one each.
#[derive(Clone)]
pub struct SharedRoundTrips {
    client: async_nats::Client,
    batch: std::sync::Arc<std::sync::Mutex<Batch>>,
}

/// Why a shared round trip failed (the same error for the whole batch).
pub type RoundTripError = std::sync::Arc<async_nats::RequestError>;

#[derive(Default)]
struct Batch {
    /// Whether a task is sending round trips for the waiters.
    running: bool,
    waiters: Vec<tokio::sync::oneshot::Sender<Result<(), RoundTripError>>>,
}

impl SharedRoundTrips {
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            batch: Default::default(),
        }
    }

    /// Like [`round_trip`]: once this returns, the server has processed
    /// everything this client sent before the call.
    pub async fn wait(&self) -> Result<(), RoundTripError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut batch = self.batch.lock().unwrap();
            batch.waiters.push(tx);
            !std::mem::replace(&mut batch.running, true)
        };
        if start {
            tokio::spawn(self.clone().send_while_asked());
        }
        // A dropped sender: the runtime is shutting down.
        rx.await.unwrap_or_else(|_| {
            Err(std::sync::Arc::new(
                async_nats::RequestErrorKind::Other.into(),
            ))
        })
    }

    async fn send_while_asked(self) {
        loop {
            let waiters = {
                let mut batch = self.batch.lock().unwrap();
                if batch.waiters.is_empty() {
                    batch.running = false;
                    return;
                }
                std::mem::take(&mut batch.waiters)
            };
            // Everything the waiters sent was queued before this request.
            let result = round_trip(&self.client).await.map_err(std::sync::Arc::new);
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

/// Whether `client` is connected now; while it reconnects, what is
/// published waits in its buffer for a server that may not come back.
pub fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(urls: &[&str]) -> Vec<async_nats::ServerAddr> {
        urls.iter().map(|u| u.parse().unwrap()).collect()
    }

    fn with_user(user: &str, password: &str) -> NatsSecurity {
        NatsSecurity {
            nats_user: Some(user.into()),
            nats_password: Some(Password::new(password)),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn shared_round_trips_cover_every_subscription_made_before_asking() {
        let server = herald_testing::NatsServer::start();
        let client = async_nats::connect(server.client_url()).await.unwrap();
        let publisher = async_nats::connect(server.client_url()).await.unwrap();
        // Answer the pings, counting them (nobody answers them in production).
        let mut pings = client.subscribe("_herald.ping.>").await.unwrap();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let answering = tokio::spawn({
            let (client, answered) = (client.clone(), answered.clone());
            async move {
                while let Some(ping) = futures::StreamExt::next(&mut pings).await {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let reply = ping.reply.unwrap();
                    client.publish(reply, bytes::Bytes::new()).await.unwrap();
                }
            }
        });
        let shared = SharedRoundTrips::new(client.clone());
        let waits = (0..300).map(|i| {
            let (client, shared, publisher) = (client.clone(), shared.clone(), publisher.clone());
            tokio::spawn(async move {
                let subject = format!("shared.{i}");
                let mut subscription = client.subscribe(subject.clone()).await.unwrap();
                shared.wait().await.unwrap();
                // The server has the interest now: a publish right away arrives.
                publisher.publish(subject, "x".into()).await.unwrap();
                let got = tokio::time::timeout(
                    Duration::from_secs(5),
                    futures::StreamExt::next(&mut subscription),
                );
                assert!(got.await.unwrap().is_some());
            })
        });
        for wait in futures::future::join_all(waits).await {
            wait.unwrap();
        }
        answering.abort();
        let pings = answered.load(std::sync::atomic::Ordering::Relaxed);
        assert!((1..300).contains(&pings), "{pings} pings for 300 waits");
    }

    #[test]
    fn credentials_come_from_the_flags_or_the_urls() {
        let none = NatsSecurity::default();
        assert_eq!(none.login(&addrs(&["nats://h:4222"])).unwrap(), None);
        assert_eq!(
            with_user("edge", "pw")
                .login(&addrs(&["nats://h"]))
                .unwrap(),
            Some(Login::UserPassword("edge".into(), Password::new("pw")))
        );
        // Percent-encoded in the URL, plain in the login.
        let urls = addrs(&[
            "nats://ed%40ge:p%2Fw%3A@a:4222",
            "nats://ed%40ge:p%2Fw%3A@b",
        ]);
        assert_eq!(
            none.login(&urls).unwrap(),
            Some(Login::UserPassword("ed@ge".into(), Password::new("p/w:")))
        );
        assert_eq!(
            none.login(&addrs(&["nats://s3cret@h"])).unwrap(),
            Some(Login::Token(Password::new("s3cret")))
        );
        // A URL without credentials beside one with them: the ones given.
        assert!(
            none.login(&addrs(&["nats://a", "nats://u:p@b"]))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn ambiguous_credentials_are_refused() {
        let none = NatsSecurity::default();
        for urls in [
            &["nats://u:p@a", "nats://u:q@b"][..],
            &["nats://u:p@a", "nats://v:p@b"],
        ] {
            assert!(matches!(
                none.login(&addrs(urls)),
                Err(ConnectError::Credentials(_))
            ));
        }
        let both = with_user("edge", "pw").login(&addrs(&["nats://u:p@a"]));
        assert!(matches!(both, Err(ConnectError::Credentials(_))));
        let half = NatsSecurity {
            nats_password: Some(Password::new("pw")),
            ..Default::default()
        };
        assert!(matches!(
            half.login(&addrs(&["nats://a"])),
            Err(ConnectError::Credentials(_))
        ));
        let nkey = NatsSecurity {
            nats_nkey: Some("seed".into()),
            ..Default::default()
        };
        let mixed = nkey.login(&addrs(&["nats://u:p@a"]));
        assert!(matches!(mixed, Err(ConnectError::Credentials(_))));
        assert_eq!(nkey.login(&addrs(&["nats://a"])).unwrap(), None);
    }

    #[test]
    fn flags_need_each_other_and_no_other_login() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            nats: NatsSecurity,
        }
        use clap::Parser;
        let ok = Cli::try_parse_from(["x", "--nats-user", "u", "--nats-password", "p"]).unwrap();
        assert_eq!(ok.nats.nats_user.as_deref(), Some("u"));
        for bad in [
            &["x", "--nats-user", "u"][..],
            &["x", "--nats-password", "p"],
            &[
                "x",
                "--nats-user",
                "u",
                "--nats-password",
                "p",
                "--nats-nkey",
                "f",
            ],
            &[
                "x",
                "--nats-user",
                "u",
                "--nats-password",
                "p",
                "--nats-creds",
                "f",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn servers_come_without_their_credentials_and_with_the_login() {
        let urls = ["nats://u:p@a:4222".to_owned(), "tls://u:p@b".to_owned()];
        let (addrs, login) = servers(&urls, &NatsSecurity::default()).unwrap();
        let bare: Vec<&str> = addrs.iter().map(|a| a.as_url_str()).collect();
        assert_eq!(bare, ["nats://a:4222", "tls://b"]);
        assert_eq!(
            login,
            Some(Login::UserPassword("u".into(), Password::new("p")))
        );
        assert_eq!(
            login.map(|l| match l {
                Login::UserPassword(_, p) | Login::Token(p) => p.expose().to_owned(),
            }),
            Some("p".to_owned())
        );
        let bad = servers(&["http://x".to_owned()], &NatsSecurity::default());
        assert!(matches!(bad, Err(ConnectError::BadUrl { .. })));
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let debug = format!("{:?}", with_user("edge", "hunter2"));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("edge"), "{debug}");
    }

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        let cases = [
            ("nats://u:p@h:4222", "nats://***@h:4222"),
            ("nats://tok@h", "nats://***@h"),
            ("u:p@h:4222", "***@h:4222"),
            ("nats://u:p@x@h/path@y", "nats://***@h/path@y"),
            ("nats://h:4222", "nats://h:4222"),
            ("", ""),
            ("@", "***@"),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
        }
        let bare = without_login("nats://u:p@h:4222".parse().unwrap());
        assert_eq!(bare.as_url_str(), "nats://h:4222");
    }

    #[test]
    fn each_service_has_one_inbox_token_outside_the_default_inbox() {
        assert_eq!(inbox_prefix("herald-edge edge-1"), "_INBOX_herald-edge");
        assert_eq!(
            inbox_prefix("herald-push-worker p"),
            "_INBOX_herald-push-worker"
        );
        assert_eq!(inbox_prefix("a.b*>\tc d"), "_INBOX_a_b___c");
        assert_eq!(inbox_prefix(""), "_INBOX_");
    }
}
