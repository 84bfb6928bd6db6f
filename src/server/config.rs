//! Runtime configuration: built-in defaults, overridden by `Leptos.toml` (`[huddle]` section),
//! overridden by `HUDDLE_*` environment variables, overridden by command-line flags.
//! Every key is declared once in [`Settings`]; a bad value stops the server with exit code 2.

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// When an acked SQLite write is on disk (PostgreSQL follows its own `synchronous_commit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// Every commit is flushed to disk before its ack: acked messages survive power loss.
    Full,
    /// Commits reach the OS before their ack, and disk at checkpoints: acked messages survive
    /// the server being killed, but the newest ones may roll back on power loss.
    Normal,
}

/// One layer of settings. Each layer leaves unset what it does not override.
/// The same struct is read from the TOML file and from flags / environment.
#[derive(Parser, Deserialize, Debug, Default, Clone)]
#[command(name = "huddle", version, about = "Huddle: real-time chat server and web app")]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Listen address (host:port) [default: 127.0.0.1:3000]
    #[arg(long, env = "HUDDLE_ADDR", value_parser = parse_addr)]
    #[serde(default, deserialize_with = "de_addr")]
    pub addr: Option<SocketAddr>,

    /// Folder for the database and other durable data [default: ./data]
    #[arg(long, env = "HUDDLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Folder holding the built site (pkg/, assets) [default: target/site]
    #[arg(long, env = "HUDDLE_SITE_ROOT")]
    pub site_root: Option<PathBuf>,

    /// Log line format [default: pretty]
    #[arg(long, env = "HUDDLE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, tracing EnvFilter syntax (e.g. "info", "huddle=debug") [default: info]
    #[arg(long, env = "HUDDLE_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Extra origins allowed to open WebSockets, comma separated (same-origin is always allowed)
    #[arg(long, env = "HUDDLE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Most simultaneous WebSocket connections [default: 10000]
    #[arg(long, env = "HUDDLE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Longest message text in characters [default: 2000]
    #[arg(long, env = "HUDDLE_MAX_MESSAGE_CHARS", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_message_chars: Option<u32>,

    /// Largest WebSocket frame in bytes [default: 65536]
    #[arg(long, env = "HUDDLE_MAX_FRAME_BYTES", value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_frame_bytes: Option<u32>,

    /// Frames queued per connection before it counts as slow [default: 256]
    #[arg(long, env = "HUDDLE_OUTBOUND_QUEUE", value_parser = clap::value_parser!(u32).range(8..=65_536))]
    pub outbound_queue: Option<u32>,

    /// Rooms with at most this many receivers on a node get each message written straight to
    /// their sockets by the publishing task instead of waking a writer task per receiver
    /// (0: never) [default: 1000]
    #[arg(long, env = "HUDDLE_DIRECT_FANOUT_MAX", value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub direct_fanout_max: Option<u32>,

    /// Most messages one history request returns [default: 100]
    #[arg(long, env = "HUDDLE_MAX_HISTORY_PAGE", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_history_page: Option<u32>,

    /// Most missed messages replayed on resume before a gap is reported [default: 500]
    #[arg(long, env = "HUDDLE_MAX_RESUME", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_resume: Option<u32>,

    /// Most points in one whiteboard batch [default: 128]
    #[arg(long, env = "HUDDLE_BOARD_POINTS_PER_BATCH", value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub board_points_per_batch: Option<u32>,

    /// Whiteboard batches per connection per second (bursts of twice that) [default: 60]
    #[arg(long, env = "HUDDLE_BOARD_BATCHES_PER_S", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub board_batches_per_s: Option<u32>,

    /// Whiteboard batches kept per room; older ones are dropped first [default: 5000]
    #[arg(long, env = "HUDDLE_BOARD_MAX_SEGMENTS", value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    pub board_max_segments: Option<u32>,

    /// Seconds between heartbeat pings; a connection silent for two intervals is closed [default: 20]
    #[arg(long, env = "HUDDLE_HEARTBEAT_S", value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub heartbeat_s: Option<u32>,

    /// Seconds to wait for connections to close on shutdown [default: 5]
    #[arg(long, env = "HUDDLE_SHUTDOWN_GRACE_S", value_parser = clap::value_parser!(u32).range(0..=600))]
    pub shutdown_grace_s: Option<u32>,

    /// Browser reconnect: the first retry waits up to this many ms (full jitter) [default: 500]
    #[arg(long, env = "HUDDLE_RECONNECT_BASE_MS", value_parser = clap::value_parser!(u32).range(50..=60_000))]
    pub reconnect_base_ms: Option<u32>,

    /// Browser reconnect: no retry waits longer than this many ms [default: 10000]
    #[arg(long, env = "HUDDLE_RECONNECT_CAP_MS", value_parser = clap::value_parser!(u32).range(100..=600_000))]
    pub reconnect_cap_ms: Option<u32>,

    /// Browser reconnect: failed attempts in a row before it stops and offers a manual retry; 0 = never stop [default: 0]
    #[arg(long, env = "HUDDLE_RECONNECT_MAX_ATTEMPTS", value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub reconnect_max_attempts: Option<u32>,

    /// Chat messages one connection may send per second, sustained [default: 10]
    #[arg(long, env = "HUDDLE_MSG_RATE_PER_S", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub msg_rate_per_s: Option<u32>,

    /// Chat messages one connection may send in a burst [default: 20]
    #[arg(long, env = "HUDDLE_MSG_BURST", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub msg_burst: Option<u32>,

    /// Other requests (history, subscribe, rooms...) per connection per second, sustained [default: 20]
    #[arg(long, env = "HUDDLE_REQUEST_RATE_PER_S", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub request_rate_per_s: Option<u32>,

    /// Other requests per connection in a burst [default: 100]
    #[arg(long, env = "HUDDLE_REQUEST_BURST", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub request_burst: Option<u32>,

    /// Typing updates per connection per second (bursts of twice that); more are dropped [default: 2]
    #[arg(long, env = "HUDDLE_TYPING_RATE_PER_S", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub typing_rate_per_s: Option<u32>,

    /// New WebSocket connections one IP may open per 10 s [default: 20]
    #[arg(long, env = "HUDDLE_IP_CONNECTS_PER_10S", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ip_connects_per_10s: Option<u32>,

    /// WebSocket connections one IP may hold open [default: 50]
    #[arg(long, env = "HUDDLE_IP_MAX_OPEN", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ip_max_open: Option<u32>,

    /// Seconds a new connection has to send hello [default: 10]
    #[arg(long, env = "HUDDLE_HELLO_TIMEOUT_S", value_parser = clap::value_parser!(u32).range(1..=600))]
    pub hello_timeout_s: Option<u32>,

    /// Header holding the client address when behind a trusted proxy (e.g. x-forwarded-for); empty = the TCP peer [default: empty]
    #[arg(long, env = "HUDDLE_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,

    /// Secret that signs session tokens; empty = generated once into <data_dir>/jwt_secret (mode 0600) [default: empty]
    #[arg(long, env = "HUDDLE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Seconds a session token stays valid [default: 2592000 (30 days)]
    #[arg(long, env = "HUDDLE_SESSION_TTL_S", value_parser = clap::value_parser!(u32).range(10..=31_536_000))]
    pub session_ttl_s: Option<u32>,

    /// Whether people may chat as guests (pick a name, no password) [default: true]
    #[arg(long, env = "HUDDLE_ALLOW_GUESTS")]
    pub allow_guests: Option<bool>,

    /// Whether Socket.IO clients may connect at /socket.io/ [default: true]
    #[arg(long, env = "HUDDLE_SOCKETIO")]
    pub socketio: Option<bool>,

    /// Log-in attempts per minute, per IP and per username [default: 10]
    #[arg(long, env = "HUDDLE_LOGIN_ATTEMPTS_PER_MIN", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub login_attempts_per_min: Option<u32>,

    /// Registered usernames that moderate every room, comma separated [default: empty]
    #[arg(long, env = "HUDDLE_ADMINS", value_delimiter = ',')]
    pub admins: Option<Vec<String>>,

    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB; empty = huddle.db in data_dir [default: empty]
    #[arg(long, env = "HUDDLE_DATABASE_URL")]
    pub database_url: Option<String>,

    /// SQLite durability: full (each commit flushed to disk before its ack) or normal (flushed at checkpoints; survives kill -9, not power loss) [default: full]
    #[arg(long, env = "HUDDLE_SQLITE_SYNCHRONOUS")]
    pub sqlite_synchronous: Option<SqliteSync>,

    /// Redis URL (redis://HOST:PORT) through which nodes sharing a database fan messages out; empty = one node [default: empty]
    #[arg(long, env = "HUDDLE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Seconds a node's presence report in Redis lives unless refreshed (refreshed every quarter of it); a node that dies takes its users offline after about this long [default: 20]
    #[arg(long, env = "HUDDLE_PRESENCE_TTL_S", value_parser = clap::value_parser!(u32).range(2..=3600))]
    pub presence_ttl_s: Option<u32>,

    /// This node's name in a cluster (logs, /health); empty = host name and process id [default: empty]
    #[arg(long, env = "HUDDLE_NODE_ID")]
    pub node_id: Option<String>,

    /// Largest file upload, in bytes [default: 10485760]
    #[arg(long, env = "HUDDLE_MAX_UPLOAD_BYTES", value_parser = clap::value_parser!(u32).range(1024..=1_073_741_824))]
    pub max_upload_bytes: Option<u32>,

    /// Folder for uploaded files; several nodes must share it; empty = <data_dir>/files [default: empty]
    #[arg(long, env = "HUDDLE_FILES_DIR")]
    pub files_dir: Option<PathBuf>,

    /// Configuration file [default: Leptos.toml]
    #[arg(long, env = "HUDDLE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub site_root: PathBuf,
    pub log_format: LogFormat,
    pub log_level: String,
    pub allowed_origins: Vec<String>,
    pub max_connections: u32,
    pub max_message_chars: u32,
    pub max_frame_bytes: u32,
    pub outbound_queue: u32,
    pub direct_fanout_max: u32,
    pub max_history_page: u32,
    pub max_resume: u32,
    pub board_points_per_batch: u32,
    pub board_batches_per_s: u32,
    pub board_max_segments: u32,
    pub heartbeat_s: u32,
    pub shutdown_grace_s: u32,
    pub reconnect_base_ms: u32,
    pub reconnect_cap_ms: u32,
    pub reconnect_max_attempts: u32,
    pub msg_rate_per_s: u32,
    pub msg_burst: u32,
    pub request_rate_per_s: u32,
    pub request_burst: u32,
    pub typing_rate_per_s: u32,
    pub ip_connects_per_10s: u32,
    pub ip_max_open: u32,
    pub hello_timeout_s: u32,
    pub client_ip_header: String,
    pub jwt_secret: String,
    pub session_ttl_s: u32,
    pub allow_guests: bool,
    pub socketio: bool,
    pub database_url: String,
    pub sqlite_synchronous: SqliteSync,
    pub redis_url: String,
    pub presence_ttl_s: u32,
    pub max_upload_bytes: u32,
    pub files_dir: Option<PathBuf>,
    pub node_id: String,
    pub login_attempts_per_min: u32,
    pub admins: Vec<String>,
}

impl Config {
    /// The database to open: the configured URL, or `huddle.db` in the data folder.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            crate::server::store::default_database_url(&self.data_dir)
        } else {
            self.database_url.clone()
        }
    }

    /// Where uploaded files live.
    pub fn files_dir(&self) -> PathBuf {
        self.files_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("files"))
    }

    /// This node's name: the configured one, or host name and process id.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    }
}

impl Default for Config {
    fn default() -> Self {
        let client = crate::protocol::ClientSettings::default();
        Config {
            addr: "127.0.0.1:3000".parse().expect("valid default address"),
            data_dir: "data".into(),
            site_root: "target/site".into(),
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_message_chars: 2000,
            max_frame_bytes: 65_536,
            outbound_queue: 256,
            direct_fanout_max: 1000,
            max_history_page: 100,
            max_resume: 500,
            board_points_per_batch: 128,
            board_batches_per_s: 60,
            board_max_segments: 5000,
            heartbeat_s: 20,
            shutdown_grace_s: 5,
            reconnect_base_ms: client.reconnect_base_ms,
            reconnect_cap_ms: client.reconnect_cap_ms,
            reconnect_max_attempts: client.reconnect_max_attempts,
            msg_rate_per_s: 10,
            msg_burst: 20,
            request_rate_per_s: 20,
            request_burst: 100,
            typing_rate_per_s: 2,
            ip_connects_per_10s: 20,
            ip_max_open: 50,
            hello_timeout_s: 10,
            client_ip_header: String::new(),
            jwt_secret: String::new(),
            session_ttl_s: 30 * 24 * 3600,
            allow_guests: true,
            socketio: true,
            database_url: String::new(),
            sqlite_synchronous: SqliteSync::Full,
            redis_url: String::new(),
            presence_ttl_s: 20,
            max_upload_bytes: 10 * 1024 * 1024,
            files_dir: None,
            node_id: String::new(),
            login_attempts_per_min: 10,
            admins: Vec::new(),
        }
    }
}

impl Config {
    /// The part of the configuration the browser needs, rendered into every page.
    pub fn client_settings(&self) -> crate::protocol::ClientSettings {
        crate::protocol::ClientSettings {
            reconnect_base_ms: self.reconnect_base_ms,
            reconnect_cap_ms: self.reconnect_cap_ms,
            reconnect_max_attempts: self.reconnect_max_attempts,
            allow_guests: self.allow_guests,
        }
    }
}

/// A configuration problem, reported with the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The file's layout: settings live under `[huddle]`; other tables are left to other tools.
#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    huddle: Option<Settings>,
}

impl Config {
    /// Reads flags and environment (clap exits with code 2 on a bad value), then the file.
    pub fn load() -> Result<Config, ConfigError> {
        let cli = Settings::parse();
        let path = cli.config.clone().unwrap_or_else(|| PathBuf::from("Leptos.toml"));
        let explicit = cli.config.is_some();
        let file = Self::read_file(&path, explicit)?;
        Self::resolve(cli, file)
    }

    /// Parses one TOML text; errors name the file and the key.
    pub fn parse_file_text(text: &str, origin: &Path) -> Result<Settings, ConfigError> {
        let parsed: ConfigFile = toml::from_str(text)
            .map_err(|e| ConfigError(format!("{}: {}", origin.display(), e.to_string().trim_end())))?;
        Ok(parsed.huddle.unwrap_or_default())
    }

    fn read_file(path: &Path, explicit: bool) -> Result<Settings, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_file_text(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Settings::default()),
            Err(e) => Err(ConfigError(format!(
                "config: cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Layers `upper` (flags/env) over `file` over the defaults, then checks cross-key rules.
    pub fn resolve(upper: Settings, file: Settings) -> Result<Config, ConfigError> {
        let d = Config::default();
        let pick = |a: Option<u32>, b: Option<u32>, default: u32| a.or(b).unwrap_or(default);
        let config = Config {
            addr: upper.addr.or(file.addr).unwrap_or(d.addr),
            data_dir: upper.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            site_root: upper.site_root.or(file.site_root).unwrap_or(d.site_root),
            log_format: upper.log_format.or(file.log_format).unwrap_or(d.log_format),
            log_level: upper.log_level.or(file.log_level).unwrap_or(d.log_level),
            allowed_origins: upper
                .allowed_origins
                .or(file.allowed_origins)
                .unwrap_or(d.allowed_origins),
            max_connections: pick(upper.max_connections, file.max_connections, d.max_connections),
            max_message_chars: pick(
                upper.max_message_chars,
                file.max_message_chars,
                d.max_message_chars,
            ),
            max_frame_bytes: pick(upper.max_frame_bytes, file.max_frame_bytes, d.max_frame_bytes),
            outbound_queue: pick(upper.outbound_queue, file.outbound_queue, d.outbound_queue),
            direct_fanout_max: pick(
                upper.direct_fanout_max,
                file.direct_fanout_max,
                d.direct_fanout_max,
            ),
            max_history_page: pick(upper.max_history_page, file.max_history_page, d.max_history_page),
            max_resume: pick(upper.max_resume, file.max_resume, d.max_resume),
            board_points_per_batch: pick(
                upper.board_points_per_batch,
                file.board_points_per_batch,
                d.board_points_per_batch,
            ),
            board_batches_per_s: pick(
                upper.board_batches_per_s,
                file.board_batches_per_s,
                d.board_batches_per_s,
            ),
            board_max_segments: pick(
                upper.board_max_segments,
                file.board_max_segments,
                d.board_max_segments,
            ),
            heartbeat_s: pick(upper.heartbeat_s, file.heartbeat_s, d.heartbeat_s),
            shutdown_grace_s: pick(upper.shutdown_grace_s, file.shutdown_grace_s, d.shutdown_grace_s),
            reconnect_base_ms: pick(
                upper.reconnect_base_ms,
                file.reconnect_base_ms,
                d.reconnect_base_ms,
            ),
            reconnect_cap_ms: pick(upper.reconnect_cap_ms, file.reconnect_cap_ms, d.reconnect_cap_ms),
            reconnect_max_attempts: pick(
                upper.reconnect_max_attempts,
                file.reconnect_max_attempts,
                d.reconnect_max_attempts,
            ),
            msg_rate_per_s: pick(upper.msg_rate_per_s, file.msg_rate_per_s, d.msg_rate_per_s),
            msg_burst: pick(upper.msg_burst, file.msg_burst, d.msg_burst),
            request_rate_per_s: pick(
                upper.request_rate_per_s,
                file.request_rate_per_s,
                d.request_rate_per_s,
            ),
            request_burst: pick(upper.request_burst, file.request_burst, d.request_burst),
            typing_rate_per_s: pick(
                upper.typing_rate_per_s,
                file.typing_rate_per_s,
                d.typing_rate_per_s,
            ),
            ip_connects_per_10s: pick(
                upper.ip_connects_per_10s,
                file.ip_connects_per_10s,
                d.ip_connects_per_10s,
            ),
            ip_max_open: pick(upper.ip_max_open, file.ip_max_open, d.ip_max_open),
            hello_timeout_s: pick(upper.hello_timeout_s, file.hello_timeout_s, d.hello_timeout_s),
            client_ip_header: upper
                .client_ip_header
                .or(file.client_ip_header)
                .unwrap_or(d.client_ip_header),
            jwt_secret: upper.jwt_secret.or(file.jwt_secret).unwrap_or(d.jwt_secret),
            session_ttl_s: pick(upper.session_ttl_s, file.session_ttl_s, d.session_ttl_s),
            allow_guests: upper.allow_guests.or(file.allow_guests).unwrap_or(d.allow_guests),
            socketio: upper.socketio.or(file.socketio).unwrap_or(d.socketio),
            database_url: upper.database_url.or(file.database_url).unwrap_or(d.database_url),
            sqlite_synchronous: upper
                .sqlite_synchronous
                .or(file.sqlite_synchronous)
                .unwrap_or(d.sqlite_synchronous),
            redis_url: upper.redis_url.or(file.redis_url).unwrap_or(d.redis_url),
            presence_ttl_s: pick(upper.presence_ttl_s, file.presence_ttl_s, d.presence_ttl_s),
            max_upload_bytes: pick(upper.max_upload_bytes, file.max_upload_bytes, d.max_upload_bytes),
            files_dir: upper
                .files_dir
                .or(file.files_dir)
                .filter(|p| !p.as_os_str().is_empty()),
            node_id: upper.node_id.or(file.node_id).unwrap_or(d.node_id),
            login_attempts_per_min: pick(
                upper.login_attempts_per_min,
                file.login_attempts_per_min,
                d.login_attempts_per_min,
            ),
            admins: upper.admins.or(file.admins).unwrap_or(d.admins),
        };
        config.validate()?;
        Ok(config)
    }

    /// Range rules, checked here so file values get the same checks as flags.
    fn validate(&self) -> Result<(), ConfigError> {
        let check = |key: &str, value: u32, min: u32, max: u32| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError(format!(
                    "config key `{key}`: {value} is out of range; accepted values are {min}..={max}"
                )))
            }
        };
        check("max_connections", self.max_connections, 1, u32::MAX)?;
        check("max_message_chars", self.max_message_chars, 1, 100_000)?;
        check("max_frame_bytes", self.max_frame_bytes, 1024, 16_777_216)?;
        check("outbound_queue", self.outbound_queue, 8, 65_536)?;
        check("max_history_page", self.max_history_page, 1, 1000)?;
        check("max_resume", self.max_resume, 1, 100_000)?;
        check("direct_fanout_max", self.direct_fanout_max, 0, 100_000)?;
        check("board_points_per_batch", self.board_points_per_batch, 2, 10_000)?;
        check("board_batches_per_s", self.board_batches_per_s, 1, 10_000)?;
        check("board_max_segments", self.board_max_segments, 10, 1_000_000)?;
        check("heartbeat_s", self.heartbeat_s, 1, 3600)?;
        check("shutdown_grace_s", self.shutdown_grace_s, 0, 600)?;
        check("reconnect_base_ms", self.reconnect_base_ms, 50, 60_000)?;
        check("reconnect_cap_ms", self.reconnect_cap_ms, 100, 600_000)?;
        check("reconnect_max_attempts", self.reconnect_max_attempts, 0, 10_000)?;
        check("msg_rate_per_s", self.msg_rate_per_s, 1, 10_000)?;
        check("msg_burst", self.msg_burst, 1, 10_000)?;
        check("request_rate_per_s", self.request_rate_per_s, 1, 10_000)?;
        check("request_burst", self.request_burst, 1, 100_000)?;
        check("typing_rate_per_s", self.typing_rate_per_s, 1, 1_000)?;
        check("ip_connects_per_10s", self.ip_connects_per_10s, 1, 1_000_000)?;
        check("ip_max_open", self.ip_max_open, 1, 1_000_000)?;
        check("hello_timeout_s", self.hello_timeout_s, 1, 600)?;
        check("session_ttl_s", self.session_ttl_s, 10, 31_536_000)?;
        check("login_attempts_per_min", self.login_attempts_per_min, 1, 100_000)?;
        check("presence_ttl_s", self.presence_ttl_s, 2, 3600)?;
        check("max_upload_bytes", self.max_upload_bytes, 1024, 1_073_741_824)?;
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            return Err(ConfigError(
                "config key `jwt_secret`: too short; accepted values are at least 32 characters \
                 (or leave it empty to have one generated in the data folder)"
                    .to_owned(),
            ));
        }
        let url = self.database_url.as_str();
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(ConfigError(
                "config key `database_url`: accepted values start with sqlite: or postgres: \
                 (or leave it empty for huddle.db in the data folder)"
                    .to_owned(),
            ));
        }
        if url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory")) {
            return Err(ConfigError(
                "config key `database_url`: an in-memory SQLite database is not supported (each of \
                 the server's connections would see a database of its own); name a file, or leave \
                 it empty for huddle.db in the data folder"
                    .to_owned(),
            ));
        }
        if !url.is_empty() && !url.starts_with("sqlite:") && self.jwt_secret.is_empty() {
            return Err(ConfigError(
                "config key `jwt_secret`: must be set (the same on every node) when nodes share a \
                 PostgreSQL database, so a session signed in on one node is valid on the others"
                    .to_owned(),
            ));
        }
        if !self.redis_url.is_empty() && !self.redis_url.starts_with("redis://") {
            return Err(ConfigError(
                "config key `redis_url`: accepted values look like redis://127.0.0.1:6379 \
                 (or leave it empty when one node serves everyone)"
                    .to_owned(),
            ));
        }
        if self.reconnect_cap_ms < self.reconnect_base_ms {
            return Err(ConfigError(format!(
                "config key `reconnect_cap_ms`: {} is below reconnect_base_ms = {}; \
                 accepted values are at least reconnect_base_ms",
                self.reconnect_cap_ms, self.reconnect_base_ms
            )));
        }
        // A frame must be able to carry the longest message (4 bytes per char, plus envelope).
        if (self.max_frame_bytes as u64) < self.max_message_chars as u64 * 4 + 512 {
            return Err(ConfigError(format!(
                "config key `max_frame_bytes`: {} is too small for max_message_chars = {}; \
                 accepted values are at least 4 * max_message_chars + 512",
                self.max_frame_bytes, self.max_message_chars
            )));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            ConfigError(format!(
                "config key `log_level`: {:?} is not a valid filter ({e}); accepted values look like \
                 \"info\", \"warn\" or \"huddle=debug,info\"",
                self.log_level
            ))
        })?;
        Ok(())
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not a listen address; accepted values are host:port such as 127.0.0.1:3000 or [::1]:3000")
    })
}

fn de_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_addr(&text).map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults_and_flags_override_file() {
        let file = Config::parse_file_text(
            "[huddle]\naddr = \"127.0.0.1:4000\"\nmax_message_chars = 500\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let upper = Settings {
            max_message_chars: Some(700),
            ..Default::default()
        };
        let config = Config::resolve(upper, file).unwrap();
        assert_eq!(config.addr.port(), 4000);
        assert_eq!(config.max_message_chars, 700);
        assert_eq!(config.outbound_queue, 256);
        assert_eq!(config.direct_fanout_max, 1000);
        assert_eq!(config.sqlite_synchronous, SqliteSync::Full, "durable by default");
        let file =
            Config::parse_file_text("[huddle]\nsqlite_synchronous = \"normal\"\n", Path::new("x.toml"));
        let config = Config::resolve(Settings::default(), file.unwrap()).unwrap();
        assert_eq!(config.sqlite_synchronous, SqliteSync::Normal);
    }

    #[test]
    fn bad_file_value_names_key_and_accepted_values() {
        let err =
            Config::parse_file_text("[huddle]\nlog_format = \"loud\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.0.contains("log_format") && err.0.contains("pretty"), "{err}");
        let err = Config::parse_file_text("[huddle]\naddr = \"nowhere\"\n", Path::new("x.toml")).unwrap_err();
        assert!(
            err.0.contains("addr") && err.0.contains("127.0.0.1:3000"),
            "{err}"
        );
        let err = Config::parse_file_text("[huddle]\nmystery = 1\n", Path::new("x.toml")).unwrap_err();
        assert!(err.0.contains("mystery"), "{err}");
    }

    #[test]
    fn an_in_memory_sqlite_database_is_refused() {
        for url in ["sqlite::memory:", "sqlite://file.db?mode=memory"] {
            let file = Settings {
                database_url: Some(url.into()),
                ..Default::default()
            };
            let err = Config::resolve(Settings::default(), file).unwrap_err();
            assert!(
                err.0.contains("database_url") && err.0.contains("in-memory"),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn out_of_range_value_is_refused() {
        let file = Settings {
            outbound_queue: Some(1),
            ..Default::default()
        };
        let err = Config::resolve(Settings::default(), file).unwrap_err();
        assert!(
            err.0.contains("outbound_queue") && err.0.contains("8..=65536"),
            "{err}"
        );
    }
}
