//! One connection to one server: the handshake (INFO, TLS, CONNECT, PING
//! → PONG), then buffered reads and writes driven by one task.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::ServerAddr;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::login::Identity;
use crate::proto::{self, Info, Parsed, ServerOp};
use crate::transport::{Tls, TlsError, Transport};

/// Bytes read at a time, at least.
const READ_CHUNK: usize = 64 * 1024;
/// A write buffer larger than this (e.g. after re-sending every SUB) is
/// let go once empty.
const WRITE_KEEP: usize = 256 * 1024;
/// Messages up to this size are read even if the server's INFO announces
/// a smaller (or no) max_payload.
const MIN_MESSAGE_LIMIT: usize = 1 << 20;

/// What every connection is made with.
pub struct Setup {
    pub identity: Identity,
    pub tls: Tls,
    /// Sent in CONNECT, shown in the server's /connz.
    pub name: String,
}

/// Why a connection could not be made or was lost.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
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
}

/// A connection past its handshake.
pub struct Session {
    io: Transport,
    read: BytesMut,
    write: BytesMut,
    /// Bytes handed to the socket but maybe not flushed (TLS buffers).
    unflushed: bool,
    /// The size the next operation needs in `read`, when known.
    need: usize,
    /// The largest message accepted.
    max_message: usize,
    pub server: ServerAddr,
}

/// What woke the connection's task.
pub enum Ready<C> {
    /// Bytes arrived: take the operations with [`Session::next_op`].
    Read,
    Command(C),
    Failed(Failure),
}

impl Session {
    /// Connects to `server` and logs in; returns with the server's INFO.
    pub async fn open(server: &ServerAddr, setup: &Setup) -> Result<(Self, Info), Failure> {
        let tcp = TcpStream::connect((server.host(), server.port())).await?;
        tcp.set_nodelay(true)?;
        let mut session = Session {
            io: Transport::Plain(tcp),
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::new(),
            unflushed: false,
            need: 0,
            max_message: MIN_MESSAGE_LIMIT,
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
        let connect = setup
            .identity
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
        session.max_message = info.max_payload.max(MIN_MESSAGE_LIMIT);
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
    pub fn next_op(&mut self) -> Result<Option<ServerOp>, proto::ProtoError> {
        match proto::parse(&mut self.read, self.max_message)? {
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
        let missing = self.need.saturating_sub(self.read.len());
        let spare = self.read.capacity() - self.read.len();
        if spare < missing || spare < READ_CHUNK / 16 {
            self.read.reserve(missing.max(READ_CHUNK));
        }
    }

    /// Queues bytes to send.
    pub fn queue(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    /// Sends everything queued (used before the task takes over).
    pub async fn flush(&mut self) -> Result<(), Failure> {
        self.io.write_all(&self.write).await?;
        self.write.clear();
        self.io.flush().await?;
        Ok(())
    }

    /// Makes progress on writes, then waits for a read or a command.
    /// `commands_first` alternates so that neither starves the other.
    pub fn poll_ready<C>(
        &mut self,
        cx: &mut Context<'_>,
        commands: impl FnOnce(&mut Context<'_>) -> Poll<C>,
        commands_first: bool,
    ) -> Poll<Ready<C>> {
        if let Err(e) = self.poll_write(cx) {
            return Poll::Ready(Ready::Failed(e));
        }
        if commands_first {
            if let Poll::Ready(command) = commands(cx) {
                return Poll::Ready(Ready::Command(command));
            }
            self.poll_read(cx)
        } else {
            match self.poll_read(cx) {
                Poll::Pending => commands(cx).map(Ready::Command),
                ready => ready,
            }
        }
    }

    fn poll_read<C>(&mut self, cx: &mut Context<'_>) -> Poll<Ready<C>> {
        self.reserve();
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => Poll::Ready(Ready::Failed(Failure::Closed)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ready::Read),
            Poll::Ready(Err(e)) => Poll::Ready(Ready::Failed(e.into())),
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
