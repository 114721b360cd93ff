//! One connection to one server: the handshake (INFO, TLS, CONNECT, PING
//! → PONG), then buffered reads and writes driven by one task, and what
//! the server has yet to answer on it.

use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::ServerAddr;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use herald_nats::connection::{Login, NatsSecurity};

use crate::acks::Acks;
use crate::deliver::Sid;
use crate::login::Identity;
use crate::proto::{self, Info, Parsed, Parser, ServerOp};
use crate::round_trips::RoundTrips;
use crate::transport::{Tls, TlsError, Transport};

/// Bytes read at a time, at least.
const READ_CHUNK: usize = 64 * 1024;
/// A write buffer larger than this (e.g. after re-sending every SUB) is
/// let go once empty.
const WRITE_KEEP: usize = 256 * 1024;
/// What every connection is made with.
pub(crate) struct Setup {
    /// Where the credentials are: their files are read again for every
    /// connection, so a rotated key is picked up at the next reconnect.
    pub security: NatsSecurity,
    /// User and password, or a token, from the flags or the URLs.
    pub login: Option<Login>,
    pub tls: Tls,
    /// Sent in CONNECT, shown in the server's /connz.
    pub name: String,
    /// Messages larger than this are skipped, whatever the server allows.
    pub max_message: usize,
}

/// The limit when a server announces no `max_payload` (its default).
const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// Why a connection could not be made or was lost.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(#[from] proto::ProtoError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("credentials: {0}")]
    Credentials(#[from] herald_nats::connection::ConnectError),
}

/// A connection past its handshake.
pub(crate) struct Session {
    io: Transport,
    read: BytesMut,
    write: BytesMut,
    /// Bytes handed to the socket but maybe not flushed (TLS buffers).
    unflushed: bool,
    /// The size the next operation needs in `read`, when known.
    need: usize,
    parser: Parser,
    /// The SUBs and UNSUBs the server has not answered yet.
    pub acks: Acks,
    /// The PINGs it has not answered yet, and who waits for them.
    pub round_trips: RoundTrips,
    pub server: ServerAddr,
}

impl Session {
    /// Connects to `server` and logs in; returns with the server's INFO.
    pub(crate) async fn open(server: &ServerAddr, setup: &Setup) -> Result<(Self, Info), Failure> {
        let tcp = TcpStream::connect((server.host(), server.port())).await?;
        tcp.set_nodelay(true)?;
        let identity = Identity::load(&setup.security, setup.login.clone())?;
        let mut session = Session {
            io: Transport::Plain(tcp),
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::new(),
            unflushed: false,
            need: 0,
            parser: Parser::new(setup.max_message),
            acks: Acks::default(),
            round_trips: RoundTrips::default(),
            server: server.clone(),
        };
        let mut info = match session.read_op().await? {
            ServerOp::Info(info) => *info,
            _ => return Err(Failure::Refused("it did not start with INFO".into())),
        };
        let tls = server.tls_required() || setup.tls.required() || info.tls_required;
        if tls {
            if !info.tls_required && !info.tls_available {
                return Err(TlsError::NotOffered.into());
            }
            let Transport::Plain(tcp) = session.io else {
                return Err(TlsError::StartedTwice.into());
            };
            session.io = setup.tls.upgrade(tcp, server.host()).await?;
        }
        let connect = identity
            .connect_line(&setup.name, tls, info.nonce.as_deref())
            .map_err(|e| Failure::Refused(e.to_owned()))?;
        session.io.write_all(connect.as_bytes()).await?;
        session.io.write_all(b"PING\r\n").await?;
        session.io.flush().await?;
        loop {
            match session.read_op().await? {
                ServerOp::Pong => break,
                ServerOp::Err(text) => return Err(Failure::Refused(text)),
                ServerOp::Info(update) => info = *update,
                ServerOp::Ping => session.io.write_all(b"PONG\r\n").await?,
                _ => {}
            }
        }
        // What the server lets a publisher send is what is expected here;
        // a larger message (routed from a server with a higher limit, or
        // a broken one) is skipped, and no server makes us hold more than
        // `max_message` for one.
        let announced = match info.max_payload {
            0 => DEFAULT_MAX_PAYLOAD,
            n => n,
        };
        session.parser = Parser::new(announced.min(setup.max_message));
        Ok((session, info))
    }

    /// Reads until one operation is complete (during the handshake).
    async fn read_op(&mut self) -> Result<ServerOp, Failure> {
        loop {
            if let Some(op) = self.next_op()? {
                return Ok(op);
            }
            self.reserve();
            if tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.read).await? == 0 {
                return Err(Failure::Closed);
            }
        }
    }

    /// The next complete operation read, if any.
    pub(crate) fn next_op(&mut self) -> Result<Option<ServerOp>, proto::ProtoError> {
        match self.parser.parse(&mut self.read)? {
            Parsed::Op(op) => {
                self.need = 0;
                Ok(Some(op))
            }
            Parsed::Need(need) => {
                self.need = need;
                Ok(None)
            }
        }
    }

    /// Makes room for the next read: a chunk, or the rest of a large
    /// message at once.
    fn reserve(&mut self) {
        if self.parser.is_skipping() {
            // An oversized message's bytes are dropped as they come.
            self.need = 0;
        }
        let missing = self.need.saturating_sub(self.read.len());
        let spare = self.read.capacity() - self.read.len();
        if spare < missing || spare < READ_CHUNK / 16 {
            self.read.reserve(missing.max(READ_CHUNK));
        }
    }

    /// Queues a SUB; the server answers it in line (see `acks`).
    pub(crate) fn subscribe(&mut self, sid: Sid, subject: &str) {
        let _ = write!(self.write, "SUB {subject} {sid}\r\n");
        self.acks.subscribed(sid);
    }

    /// Queues an UNSUB; the server answers it in line too.
    pub(crate) fn unsubscribe(&mut self, sid: Sid) {
        let _ = write!(self.write, "UNSUB {sid}\r\n");
        self.acks.unsubscribed();
    }

    /// Queues a PING for the callers waiting in `round_trips`, or, with
    /// `keepalive`, to tell a live server from a silent socket.
    pub(crate) fn ping(&mut self, keepalive: bool) {
        self.write.extend_from_slice(b"PING\r\n");
        if keepalive {
            self.round_trips.keepalive_sent();
        } else {
            self.round_trips.ping_sent();
        }
    }

    /// Queues the answer to the server's PING.
    pub(crate) fn pong(&mut self) {
        self.write.extend_from_slice(b"PONG\r\n");
    }

    /// Makes progress on writes, then resolves once bytes were read (take
    /// the operations with [`Session::next_op`]) or the connection failed.
    pub(crate) fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        self.poll_write(cx)?;
        self.reserve();
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => Poll::Ready(Err(Failure::Closed)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), Failure> {
        while !self.write.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.write) {
                Poll::Ready(Ok(0)) => return Err(Failure::Closed),
                Poll::Ready(Ok(n)) => {
                    self.write.advance(n);
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => return Ok(()),
            }
        }
        if self.write.capacity() > WRITE_KEEP {
            self.write = BytesMut::new();
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => {}
            }
        }
        Ok(())
    }
}
