//! One simulated chat client: signs in as a guest, opens a WebSocket from a chosen loopback
//! source address, and reads the few frame shapes the scenarios need without decoding the rest.
//! Its socket notes when the kernel received each segment, so latency can be measured to the
//! frame's arrival rather than to the moment this one-core generator got round to reading it.

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message};
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<StampedTcp>;
pub type Sink = SplitSink<Ws, Message>;
pub type Stream = SplitStream<Ws>;

/// Any single setup step that takes longer than this fails the run.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the server is and what it is.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Huddle (guests, tokens) or the baseline broadcaster (no accounts).
    pub huddle: bool,
    /// Client sockets are spread over 127.0.0.1 ..= 127.0.0.N.
    pub source_ips: u8,
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Creates a guest on Huddle and returns its session token (None for the baseline).
pub async fn sign_up(target: &Target, http: &reqwest::Client, name: &str) -> Result<Option<String>, Error> {
    if !target.huddle {
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct Guest {
        token: String,
    }
    let response = http
        .post(format!("http://{}/api/guest", target.addr))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!("guest sign-up: {} {}", response.status(), response.text().await?).into());
    }
    Ok(Some(response.json::<Guest>().await?.token))
}

/// When the kernel received the newest segment a client has read: wall-clock nanoseconds
/// since the Unix epoch (the kernel stamps with CLOCK_REALTIME), 0 before the first.
#[derive(Clone, Default)]
pub struct Arrival(Arc<AtomicU64>);

impl Arrival {
    pub fn realtime_ns(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&ns| ns > 0)
    }
}

/// A TCP stream whose reads go through `recvmsg` with SO_TIMESTAMPNS, keeping the kernel's
/// receive time of the last segment read in its [`Arrival`].
pub struct StampedTcp {
    tcp: TcpStream,
    arrival: Arrival,
    /// Room for one timestamp control message, reused by every read.
    control: Vec<u8>,
}

impl StampedTcp {
    fn new(tcp: TcpStream) -> io::Result<StampedTcp> {
        use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestampns};
        setsockopt(&tcp, ReceiveTimestampns, &true)?;
        Ok(StampedTcp {
            tcp,
            arrival: Arrival::default(),
            control: nix::cmsg_space!(nix::sys::time::TimeSpec),
        })
    }
}

/// One non-blocking `recvmsg` into `buf`: the bytes read and the kernel's stamp, if any came.
fn receive(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
    control: &mut Vec<u8>,
) -> io::Result<(usize, Option<u64>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [io::IoSliceMut::new(buf)];
    let message = recvmsg::<()>(fd, &mut iov, Some(control), MsgFlags::MSG_DONTWAIT)?;
    let stamp = message.cmsgs()?.find_map(|cmsg| match cmsg {
        ControlMessageOwned::ScmTimestampns(ts) => {
            Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
        }
        _ => None,
    });
    Ok((message.bytes, stamp))
}

impl AsyncRead for StampedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let StampedTcp {
            tcp,
            arrival,
            control,
        } = self.get_mut();
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // try_io clears the readiness when the read would block, so the next poll waits.
            match tcp.try_io(Interest::READABLE, || receive(tcp.as_raw_fd(), unfilled, control)) {
                Ok((n, stamp)) => {
                    if let Some(ns) = stamp {
                        arrival.0.store(ns, Ordering::Relaxed);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for StampedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Opens the WebSocket from source address 127.0.0.(1 + index % N) and says hello.
pub async fn connect(
    target: &Target,
    index: usize,
    token: Option<&str>,
) -> Result<(Sink, Stream, Arrival), Error> {
    let source = Ipv4Addr::new(127, 0, 0, 1 + (index % target.source_ips as usize) as u8);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let tcp = socket.connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let tcp = StampedTcp::new(tcp)?;
    let arrival = tcp.arrival.clone();
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let url = format!("ws://{}/ws", target.addr);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
    let (mut sink, mut stream) = ws.split();
    let hello = match token {
        Some(token) => {
            serde_json::json!({"type": "hello", "version": huddle::protocol::PROTOCOL_VERSION, "token": token})
        }
        None => serde_json::json!({"type": "hello", "version": huddle::protocol::PROTOCOL_VERSION}),
    };
    send_json(&mut sink, &hello).await?;
    expect(&mut stream, |frame| frame.kind == "welcome").await?;
    Ok((sink, stream, arrival))
}

pub async fn send_json(sink: &mut Sink, value: &serde_json::Value) -> Result<(), Error> {
    sink.send(Message::Text(value.to_string().into())).await?;
    Ok(())
}

/// The fields of a server frame the scenarios look at; everything else is skipped.
#[derive(Deserialize, Debug)]
pub struct Frame {
    #[serde(rename = "type")]
    pub kind: String,
    /// `joined`: the room's id; `ack`/`backlog`: the room id as a number.
    #[serde(default)]
    pub room: Option<serde_json::Value>,
    #[serde(default)]
    pub more: Option<bool>,
    #[serde(default)]
    pub messages: Option<Vec<LiveMessage>>,
}

impl Frame {
    /// The room id of a `joined` frame (`{"room": {"id": N}}`) or of an ack/backlog.
    pub fn room_id(&self) -> Option<i64> {
        match self.room.as_ref()? {
            serde_json::Value::Object(room) => room.get("id")?.as_i64(),
            other => other.as_i64(),
        }
    }
}

/// Reads frames until one satisfies `wanted`; an `error` frame or a closed socket fails.
pub async fn expect(stream: &mut Stream, wanted: impl Fn(&Frame) -> bool) -> Result<Frame, Error> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            let Some(message) = stream.next().await else {
                return Err("connection closed".into());
            };
            let Message::Text(text) = message? else { continue };
            let frame: Frame = serde_json::from_str(text.as_str())?;
            if frame.kind == "error" {
                return Err(format!("server refused: {}", text.as_str()).into());
            }
            if wanted(&frame) {
                return Ok(frame);
            }
        }
    })
    .await
    .map_err(|_| Error::from("timed out waiting for the server"))?
}

/// A timeline message as the hot path reads it: only what latency and loss need.
#[derive(Deserialize, Debug)]
pub struct LiveMessage {
    pub seq: i64,
    pub text: String,
}

#[derive(Deserialize)]
struct MessageFrame {
    message: LiveMessage,
}

#[derive(Deserialize)]
struct AckFrame {
    seq: i64,
}

#[derive(Deserialize)]
struct ErrorFrame {
    code: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// What arrived in one frame during a measured run.
pub enum Incoming {
    Message(LiveMessage),
    Ack {
        seq: i64,
    },
    /// Replayed messages; `done` when no more backlog frames follow.
    Backlog {
        messages: Vec<LiveMessage>,
        done: bool,
    },
    /// The server's heartbeat: answer with `pong`.
    Ping,
    /// A refusal, with how long the server asks to wait when it is a transient one.
    Refused {
        code: String,
        retry_after_ms: Option<u64>,
    },
    Other,
}

/// Classifies a frame by its leading `type` (servers write the tag first) and decodes only
/// the frames that matter, so the generator spends its CPU on sockets, not JSON.
pub fn classify(text: &str) -> Incoming {
    if text.starts_with(r#"{"type":"ping""#) {
        return Incoming::Ping;
    }
    if text.starts_with(r#"{"type":"message""#) {
        if let Ok(frame) = serde_json::from_str::<MessageFrame>(text) {
            return Incoming::Message(frame.message);
        }
    } else if text.starts_with(r#"{"type":"ack""#) {
        if let Ok(ack) = serde_json::from_str::<AckFrame>(text) {
            return Incoming::Ack { seq: ack.seq };
        }
    } else if text.starts_with(r#"{"type":"error""#) {
        if let Ok(error) = serde_json::from_str::<ErrorFrame>(text) {
            return Incoming::Refused {
                code: error.code,
                retry_after_ms: error.retry_after_ms,
            };
        }
    } else if text.starts_with(r#"{"type":"backlog""#) {
        if let Ok(frame) = serde_json::from_str::<Frame>(text) {
            return Incoming::Backlog {
                messages: frame.messages.unwrap_or_default(),
                done: !frame.more.unwrap_or(false),
            };
        }
    }
    Incoming::Other
}

/// Text of a benchmark message: a marker and the send time in µs since the run began.
pub fn bench_text(sent_us: u64) -> String {
    format!("lg {sent_us}")
}

/// The send time of a benchmark message, or None for anything else (joins, other chat).
pub fn bench_sent_us(text: &str) -> Option<u64> {
    text.strip_prefix("lg ")?.parse().ok()
}
