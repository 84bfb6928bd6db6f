//! The WebSocket wire under a session: the HTTP/1.1 upgrade, a reader that parses client
//! frames with tungstenite, and a writer that frames the server's messages itself and hands
//! them to the socket in one vectored write, without copying them and without keeping a
//! buffer between writes. (tungstenite's own write path copies every frame into a buffer
//! that keeps the capacity of the largest burst for the life of the connection: the largest
//! cost of an idle connection, which is what most connections are.)
//!
//! A producer (the hub fanning out a message) may also write a frame straight to the socket
//! when nothing waits before it ([`Shortcut`]), sparing the writer task a wake-up.
//!
//! Under the upgrade is the plain TCP socket, split into two owned halves without a lock,
//! and frames leave with `sendmsg`. Writing through hyper's upgraded stream instead cost a
//! lock (tokio's split), a boxed stream and the file layer of `writev` for every delivery:
//! together a quarter of the CPU a fan-out spends in user space and system calls.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode, Version},
    response::{IntoResponse, Response},
};
use bytes::{Buf, Bytes};
use futures::task::AtomicWaker;
use hyper_util::rt::TokioIo;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The client's frames, parsed (and limited) by tungstenite.
pub type Reader = WebSocketStream<ReadSide>;

/// Most bytes of control frames (pongs, the close reply) waiting for the writer; a peer that
/// floods pings loses pongs beyond this rather than growing the buffer.
const CONTROL_MAX_BYTES: usize = 1024;

/// A WebSocket upgrade request that passed the handshake checks (RFC 6455 section 4.2.1).
pub struct Upgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
    accept: String,
}

/// A refused upgrade: a status and a stable code with a sentence, like every other refusal.
fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn header_lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        if parts.method != Method::GET || parts.version != Version::HTTP_11 {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_upgrade: a WebSocket opens with an HTTP/1.1 GET",
            ));
        }
        if !header_lists(&parts.headers, header::CONNECTION, "upgrade")
            || !header_lists(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_upgrade: this endpoint only speaks WebSocket (Connection: upgrade, Upgrade: websocket)",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            let mut refusal = refuse(
                StatusCode::UPGRADE_REQUIRED,
                "bad_upgrade: only WebSocket version 13 is spoken here",
            );
            refusal
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return Err(refusal);
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_upgrade: Sec-WebSocket-Key is missing",
            ));
        };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_upgrade: this connection cannot be upgraded",
            ));
        };
        Ok(Upgrade { on_upgrade, accept })
    }
}

impl Upgrade {
    /// Answers 101 and, once the connection is switched, spawns the future `session` makes
    /// of its two halves. The task that waited for the switch then ends: a future keeps
    /// room for everything it captured for its whole life, and this one's captures (the
    /// `session` closure, the config, the upgrade) would be held by every idle connection.
    pub fn on_upgrade<F, Fut>(self, config: WebSocketConfig, session: F) -> Response
    where
        F: FnOnce(Reader, Writer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::info!(%error, "WebSocket upgrade failed");
                    return;
                }
            };
            let Some((read, write)) = split(upgraded) else {
                tracing::error!("WebSocket upgrade is not over a plain TCP socket; closing it");
                return;
            };
            let side = Arc::new(WriteSide::new(write));
            let read = ReadSide {
                read,
                side: side.clone(),
            };
            let reader = WebSocketStream::from_raw_socket(read, Role::Server, Some(config)).await;
            tokio::spawn(session(reader, Writer { side }));
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&self.accept).expect("base64 is a valid header value"),
        );
        response
    }
}

/// The two halves of the TCP socket under an upgraded connection, which hyper hands back
/// whenever the server listens on TCP (as `axum::serve` does here).
fn split(upgraded: hyper::upgrade::Upgraded) -> Option<(SocketRead, OwnedWriteHalf)> {
    let parts = hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded).ok()?;
    let (read, write) = parts.io.into_inner().into_split();
    // Bytes hyper read past the request are the first of the WebSocket stream. They are
    // copied out: even empty, hyper's slice would keep its whole read buffer (8 KiB or more)
    // alive for the life of the connection.
    let early = Bytes::copy_from_slice(&parts.read_buf);
    Some((SocketRead { early, read }, write))
}

/// The socket's reading half, after whatever hyper had already read of it.
struct SocketRead {
    early: Bytes,
    read: OwnedReadHalf,
}

/// Writes what the socket takes now of `slices` (waiting until it takes something).
async fn send_vectored(write: &OwnedWriteHalf, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let tcp: &TcpStream = write.as_ref();
    loop {
        // sendmsg: the socket call, not the file layer's writev. (A peer gone away gives
        // EPIPE, not SIGPIPE: Rust programs ignore that signal.) Tried first: a socket is
        // writable nearly always, and waiting costs a future.
        match tcp.try_io(Interest::WRITABLE, || {
            socket2::SockRef::from(tcp).send_vectored(slices)
        }) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
            result => return result,
        }
    }
}

/// Frames tungstenite writes on its own (pongs, the reply to a client's close), handed to the
/// writer so that only one task ever writes to the socket.
#[derive(Default)]
struct Control {
    bytes: Mutex<Vec<u8>>,
    /// Set when the writer should look at `bytes` (or at why else it was woken).
    pending: AtomicBool,
    /// The writer, while it waits. (A `tokio::sync::Notify` takes a lock on every poll, and
    /// the writer polls this once per batch of frames it sends.)
    writer: AtomicWaker,
}

impl Control {
    fn signal(&self) {
        self.pending.store(true, Ordering::Release);
        self.writer.wake();
    }

    fn poll_signalled(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.writer.register(cx.waker());
        // A signal given before the registration must not be missed.
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The socket's writing half and what its writers share. The writer task writes whatever
/// is queued; a producer may write a frame straight to the socket instead ([`Shortcut`]),
/// which saves waking the writer task for each frame (the queue, the wake-up and the
/// task's poll were ~40 % of a fan-out's user-space CPU). Frames keep their order because a
/// producer goes straight through only when nothing accepted before is still unwritten,
/// and only while it holds `busy`.
struct WriteSide {
    write: OwnedWriteHalf,
    control: Control,
    /// Held by whoever writes to the socket: the writer task for a batch, or a producer for
    /// one frame. The writer keeps it when it ends, so nothing is written after the close.
    busy: AtomicBool,
    /// Frames accepted for this socket and not yet written: queued, taken by the writer and
    /// not yet sent, or the rest of a frame a producer could write only in part.
    unwritten: AtomicUsize,
    /// The rest of a frame a producer wrote in part (the socket's buffer was full); the
    /// writer sends it before anything else.
    rest: Mutex<Vec<u8>>,
}

impl WriteSide {
    fn new(write: OwnedWriteHalf) -> Self {
        WriteSide {
            write,
            control: Control::default(),
            busy: AtomicBool::new(false),
            unwritten: AtomicUsize::new(0),
            rest: Mutex::new(Vec::new()),
        }
    }

    fn try_acquire(&self) -> bool {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// What the producers of a connection's frames hold of its socket: they count the frames
/// they queue, and may write one straight through when nothing is waiting before it.
#[derive(Clone)]
pub struct Shortcut(Arc<WriteSide>);

/// What became of a frame offered to [`Shortcut::try_write_text`].
#[derive(Debug, PartialEq, Eq)]
pub enum Straight {
    /// On its way: written, or its rest left for the writer task.
    Written,
    /// Not written: queue it.
    Queue,
}

impl Shortcut {
    /// One more frame accepted into the queue.
    pub fn accepted(&self) {
        self.0.unwritten.fetch_add(1, Ordering::AcqRel);
    }

    /// A frame counted by [`Shortcut::accepted`] was not queued after all.
    pub fn withdrawn(&self) {
        self.0.unwritten.fetch_sub(1, Ordering::AcqRel);
    }

    /// Writes a text frame straight to the socket if nothing accepted earlier is still
    /// unwritten and the socket takes it now, without waiting.
    pub fn try_write_text(&self, text: &str) -> Straight {
        let side = &*self.0;
        if side.unwritten.load(Ordering::Acquire) != 0 || !side.try_acquire() {
            return Straight::Queue;
        }
        // Checked again under `busy`: the writer task counts what it takes until it is sent.
        if side.unwritten.load(Ordering::Acquire) != 0 {
            side.release();
            return Straight::Queue;
        }
        let (header, used) = frame_header(OPCODE_TEXT, text.len());
        let slices = [IoSlice::new(&header[..used]), IoSlice::new(text.as_bytes())];
        let total = used + text.len();
        let tcp: &TcpStream = side.write.as_ref();
        // Straight to the socket, not through tokio's readiness (it would touch another cold
        // line per connection): a full socket answers EAGAIN, and the frame is queued; the
        // writer task then waits for room the usual way.
        let written = socket2::SockRef::from(tcp).send_vectored(&slices);
        let outcome = match written {
            Ok(written) if written == total => Straight::Written,
            Ok(written) if written > 0 => {
                // The socket's buffer filled mid-frame: the writer task sends the rest first.
                let mut rest = side.rest.lock().expect("rest lock");
                rest.extend_from_slice(&header[written.min(used)..used]);
                rest.extend_from_slice(&text.as_bytes()[written.saturating_sub(used)..]);
                side.unwritten.fetch_add(1, Ordering::AcqRel);
                drop(rest);
                side.release();
                side.control.signal();
                return Straight::Written;
            }
            // Full (or failing: the writer task meets the error and ends the connection).
            _ => Straight::Queue,
        };
        side.release();
        outcome
    }
}

/// The reading half as tungstenite sees it: reads come from the socket, writes go to
/// [`Control`] for the writer.
pub struct ReadSide {
    read: SocketRead,
    side: Arc<WriteSide>,
}

impl AsyncRead for ReadSide {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let SocketRead { early, read } = &mut self.read;
        if early.has_remaining() {
            let taken = early.len().min(buf.remaining());
            buf.put_slice(&early[..taken]);
            early.advance(taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // tungstenite hands over its whole buffer at once, so each call holds whole frames:
        // dropping a call over the cap never leaves half a frame on the wire.
        let control = &self.side.control;
        let mut bytes = control.bytes.lock().expect("control lock");
        if bytes.len() + buf.len() <= CONTROL_MAX_BYTES {
            bytes.extend_from_slice(buf);
            drop(bytes);
            control.signal();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The writing half, for the writer task: it writes what is queued, between the frames
/// producers write straight through.
pub struct Writer {
    side: Arc<WriteSide>,
}

/// See [`Writer::control_signal`].
pub struct ControlSignal(Arc<WriteSide>);

impl ControlSignal {
    /// Wakes the writer as if a control frame were queued (it then checks why it was woken).
    pub fn notify(&self) {
        self.0.control.signal();
    }

    /// Resolves once a control frame was queued or [`ControlSignal::notify`] was called
    /// since the last time it resolved. Only the writer waits on it.
    pub async fn signalled(&self) {
        std::future::poll_fn(|cx| self.0.control.poll_signalled(cx)).await
    }
}

/// A server frame's header (FIN set, never masked): its bytes and how many of them count.
fn frame_header(opcode: u8, payload_len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    let used = if payload_len < 126 {
        header[1] = payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        header[1] = 126;
        header[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    (header, used)
}

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;

impl Writer {
    /// What producers use to count their frames and to write straight through.
    pub fn shortcut(&self) -> Shortcut {
        Shortcut(self.side.clone())
    }

    /// Takes the socket from producers writing straight through (they hold it for one
    /// non-blocking write at most), then sends the rest of a frame one of them left.
    pub async fn acquire(&mut self) -> io::Result<()> {
        while !self.side.try_acquire() {
            tokio::task::yield_now().await;
        }
        let rest = std::mem::take(&mut *self.side.rest.lock().expect("rest lock"));
        if !rest.is_empty() {
            self.write_all_vectored(&mut [IoSlice::new(&rest)]).await?;
            self.side.unwritten.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Gives the socket back after writing `frames` queued frames.
    pub fn release(&mut self, frames: usize) {
        self.side.unwritten.fetch_sub(frames, Ordering::AcqRel);
        self.side.release();
    }

    /// Writes text frames in order with as few system calls as the socket allows.
    pub async fn send_texts<'a>(&mut self, texts: impl ExactSizeIterator<Item = &'a str>) -> io::Result<()> {
        if texts.len() == 1 {
            // The common case on a busy server: nothing allocated.
            for text in texts {
                let (header, used) = frame_header(OPCODE_TEXT, text.len());
                let mut slices = [IoSlice::new(&header[..used]), IoSlice::new(text.as_bytes())];
                self.write_all_vectored(&mut slices).await?;
            }
            return Ok(());
        }
        let texts: Vec<&str> = texts.collect();
        if texts.is_empty() {
            return Ok(());
        }
        // Headers and slices live only for this call: nothing is kept between bursts.
        let headers: Vec<([u8; 10], usize)> =
            texts.iter().map(|t| frame_header(OPCODE_TEXT, t.len())).collect();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(texts.len() * 2);
        for ((header, used), text) in headers.iter().zip(&texts) {
            slices.push(IoSlice::new(&header[..*used]));
            slices.push(IoSlice::new(text.as_bytes()));
        }
        self.write_all_vectored(&mut slices).await
    }

    /// Writes a close frame with its code and reason (at most 123 bytes).
    pub async fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let reason = &reason.as_bytes()[..reason.len().min(123)];
        let (header, used) = frame_header(OPCODE_CLOSE, 2 + reason.len());
        let code = code.to_be_bytes();
        let mut slices = [
            IoSlice::new(&header[..used]),
            IoSlice::new(&code),
            IoSlice::new(reason),
        ];
        self.write_all_vectored(&mut slices).await
    }

    /// What tells the writer that tungstenite has a control frame for the peer; a signal
    /// given while the writer is busy is kept until it next waits.
    pub fn control_signal(&self) -> ControlSignal {
        ControlSignal(self.side.clone())
    }

    /// Writes the control frames tungstenite queued, if any.
    pub async fn send_control(&mut self) -> io::Result<()> {
        let bytes = std::mem::take(&mut *self.side.control.bytes.lock().expect("control lock"));
        if bytes.is_empty() {
            return Ok(());
        }
        self.write_all_vectored(&mut [IoSlice::new(&bytes)]).await
    }

    /// Ends the stream of bytes to the peer (TCP FIN).
    pub fn shutdown(&mut self) {
        let tcp: &TcpStream = self.side.write.as_ref();
        let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
    }

    async fn write_all_vectored(&self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        while !slices.is_empty() {
            let written = send_vectored(&self.side.write, slices).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, written);
        }
        Ok(())
    }
}

/// A writer over a plain TCP stream, with its reading half, for tests of the write path.
#[cfg(test)]
pub(crate) fn writer_over(stream: TcpStream) -> (OwnedReadHalf, Writer) {
    let (read, write) = stream.into_split();
    let side = Arc::new(WriteSide::new(write));
    (read, Writer { side })
}

#[cfg(test)]
mod tests {
    use super::frame_header;

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(frame_header(0x1, 5), ([0x81, 5, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        assert_eq!(frame_header(0x1, 125).0[1], 125);
        let (h, used) = frame_header(0x1, 126);
        assert_eq!((h[1], &h[2..4], used), (126, &[0, 126][..], 4));
        let (h, used) = frame_header(0x8, 65_535);
        assert_eq!((h[0], h[1], &h[2..4], used), (0x88, 126, &[0xff, 0xff][..], 4));
        let (h, used) = frame_header(0x1, 65_536);
        assert_eq!((h[1], &h[2..10], used), (127, &[0, 0, 0, 0, 0, 1, 0, 0][..], 10));
    }
}
