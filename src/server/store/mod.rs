//! Persistence: the SQLite database in the data folder (WAL mode, migrations at start).
//! Reads go through a small connection pool; every write goes through one writer task
//! ([`writer`]) that batches concurrent writes into one transaction (group commit), assigns
//! per-room sequence numbers without gaps, and publishes committed messages in order.
//! The chat logic sees only this module's types, so another backend can replace it.

mod board;
mod files;
mod search;
mod text_commits;
mod writer;

use crate::protocol::{
    ChatMessage, ClientMsgId, MessageId, MessageKind, Role, RoomId, RoomInfo, RoomKind, Seq, Timestamp,
    UserId, UserRef,
};
use crate::server::config::SqliteSync;
pub use board::NewSegment;
pub use files::{FileRecord, NewFile};
pub use search::SearchQuery;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
pub use writer::{Appended, NewSession, WriteOp, WriteOutcome};

/// Called by the writer, in commit order, for every message it stored.
pub type OnCommit = Arc<dyn Fn(&ChatMessage) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not a member of this room")]
    NotMember,
    #[error("no such room")]
    NoSuchRoom,
    #[error("name already taken")]
    NameTaken,
    #[error("client_msg_id already used for a message in another room")]
    IdReused,
    #[error("not allowed for this role")]
    Forbidden,
    #[error("no such message")]
    NoSuchMessage,
    #[error("banned from this room")]
    Banned,
    #[error("that user is not a member of this room")]
    TargetNotMember,
    #[error("no such user")]
    NoSuchUser,
    #[error("not a private room")]
    NotPrivate,
    #[error("no such file")]
    NoSuchFile,
    #[error("database error: {0}")]
    Db(sqlx::Error),
    #[error("the database is unreachable")]
    Unavailable,
    #[error("the store is shutting down")]
    Closed,
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_connection_error(&error) {
            StoreError::Unavailable
        } else {
            StoreError::Db(error)
        }
    }
}

/// The database is unreachable (not: it refused this statement).
pub(crate) fn is_connection_error(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || matches!(error, sqlx::Error::Database(db)
        // PostgreSQL's "operator intervention" (shutting down) and "connection exception".
        if db.code().is_some_and(|code| code.starts_with("57P") || code.starts_with("08")))
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    reads: AnyPool,
    writes: mpsc::Sender<writer::Job>,
    backend: Backend,
    search: Arc<SearchBacklog>,
}

/// How far SQLite's search index lags behind the messages (one node owns an SQLite file, so
/// this node's counters are the whole truth). PostgreSQL indexes in the insert itself and
/// never lags.
#[derive(Default)]
struct SearchBacklog {
    /// Newest message id committed.
    newest: std::sync::atomic::AtomicI64,
    /// Messages up to this id are in the index.
    indexed: std::sync::atomic::AtomicI64,
    /// One catch-up at a time: those waiting usually find their messages indexed by it.
    running: tokio::sync::Mutex<()>,
}

/// Which engine the database URL chose. The SQL is shared; the few statements whose dialects
/// differ ask this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: one file in the data folder, one node.
    Sqlite,
    /// The scale-out backend: several nodes share one database.
    Postgres,
}

/// The settings of every SQLite connection but `synchronous` and the checkpoint size:
/// - `temp_store = MEMORY`: a multi-row insert inside a transaction keeps a statement journal
///   (to undo itself alone), which SQLite spills to a temporary file past 64 KiB: at persist
///   rates those writes were a seventh of the text thread's time.
macro_rules! sqlite_session {
    () => {
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY; "
    };
}

impl Backend {
    fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// As `/health` names it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Per-connection settings, run on every new connection.
    fn session_setup(self, sync: SqliteSync) -> &'static str {
        match (self, sync) {
            // FULL: a commit is on disk before we ack, so an acked message survives power loss.
            // A checkpoint then only copies pages: every 10,000 pages (~40 MiB of WAL), since
            // with the default 1,000 big batches checkpointed every few commits, writing the
            // same hot index pages back each time.
            (Backend::Sqlite, SqliteSync::Full) => concat!(
                sqlite_session!(),
                "PRAGMA wal_autocheckpoint = 10000; PRAGMA synchronous = FULL;"
            ),
            // NORMAL: a commit is in the OS before we ack (survives kill -9), on disk at the
            // next checkpoint, which first syncs all of the WAL written since the last one
            // while the writer waits: SQLite's default 1,000 pages keeps that wait short.
            (Backend::Sqlite, SqliteSync::Normal) => concat!(
                sqlite_session!(),
                "PRAGMA wal_autocheckpoint = 1000; PRAGMA synchronous = NORMAL;"
            ),
            // The default synchronous_commit = on: a commit is flushed to the WAL before we ack.
            (Backend::Postgres, _) => "SET TIME ZONE 'UTC'",
        }
    }
}

/// [`Backend::append_texts`] on SQLite.
macro_rules! sqlite_append_texts {
    () => {
        concat!(
            "WITH run AS (
                 SELECT j.key AS ord, j.value ->> 0 AS room_id, j.value ->> 1 AS author_id,
                        j.value ->> 2 AS client_msg_id, j.value ->> 3 AS body
                 FROM json_each($1) j WHERE j.type = 'array'
             ), ",
            append_texts_tail!()
        )
    };
}

/// The engine-neutral rest of [`Backend::append_texts`].
macro_rules! append_texts_tail {
    () => {
        "accepted AS (
             SELECT run.*, r.last_seq FROM run
             JOIN rooms r ON r.id = run.room_id
             JOIN memberships m ON m.room_id = run.room_id AND m.user_id = run.author_id
             WHERE NOT EXISTS (SELECT 1 FROM messages x
                               WHERE x.author_id = run.author_id AND x.client_msg_id = run.client_msg_id)
         )
         INSERT INTO messages (room_id, seq, author_id, client_msg_id, kind, body, created_at)
         SELECT room_id, last_seq + ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY ord),
                author_id, client_msg_id, 'text', body, $2
         FROM accepted ORDER BY ord
         RETURNING id, seq, author_id, client_msg_id"
    };
}

impl Backend {
    /// Starts a write transaction. SQLite takes the write lock now, not at the first write,
    /// so the transaction never fails half-way for want of it.
    fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Inserts a run of new text messages given as a JSON array of `[room, author,
    /// client_msg_id, body]` (`$1`) at time `$2`: each takes its room's `last_seq` plus its
    /// rank in the run, and rows that are retries or whose author is not a member are left
    /// out. The only statement whose SQL differs by engine: JSON table functions do.
    fn append_texts(self) -> &'static str {
        match self {
            Backend::Sqlite => sqlite_append_texts!(),
            Backend::Postgres => concat!(
                "WITH run AS (
                     SELECT j.ord, (j.value ->> 0)::bigint AS room_id, (j.value ->> 1)::bigint AS author_id,
                            j.value ->> 2 AS client_msg_id, j.value ->> 3 AS body
                     FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS j(value, ord)
                     WHERE jsonb_typeof(j.value) = 'array'
                 ), ",
                append_texts_tail!()
            ),
        }
    }
}

/// The URL of the embedded database: `huddle.db` in the data folder, created when missing.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("huddle.db").display())
}

/// The uniqueness key of a user or room name: names differ only if this differs.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

pub fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Connects to the database at `url` (`sqlite://…` or `postgres://…`), applies its
    /// migrations and starts the writer task.
    pub async fn open(url: &str, sync: SqliteSync, on_commit: OnCommit) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| {
            StoreError::Db(sqlx::Error::Configuration(
                "database_url must start with sqlite: or postgres:".into(),
            ))
        })?;
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let reads = AnyPoolOptions::new()
            .max_connections(4)
            // A request waiting on a database that is down fails soon, as `unavailable`.
            .acquire_timeout(std::time::Duration::from_secs(3))
            .after_connect(move |conn, _| {
                Box::pin(async move { conn.execute(backend.session_setup(sync)).await.map(drop) })
            })
            .connect_with(options.clone())
            .await?;
        let migrations = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrations
            .run(&reads)
            .await
            .map_err(|e| StoreError::Db(e.into()))?;
        let search = Arc::new(SearchBacklog::default());
        let on_commit: OnCommit = match backend {
            Backend::Sqlite => {
                let (head, indexed) = sqlx::query_as::<_, (i64, i64)>(
                    "SELECT COALESCE((SELECT MAX(id) FROM messages), 0), indexed_upto FROM search_progress",
                )
                .fetch_one(&reads)
                .await?;
                search.newest.store(head, Ordering::Relaxed);
                search.indexed.store(indexed, Ordering::Relaxed);
                let search = search.clone();
                Arc::new(move |message: &ChatMessage| {
                    search.newest.fetch_max(message.id.0, Ordering::Relaxed);
                    on_commit(message);
                })
            }
            Backend::Postgres => on_commit,
        };
        let texts = match backend {
            Backend::Sqlite => {
                let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
                Some(text_commits::TextCommits::start(file.get_filename(), sync).map_err(sqlx::Error::Io)?)
            }
            Backend::Postgres => None,
        };
        let writes = writer::spawn(
            writer::WriteConnection {
                conn: None,
                options,
                backend,
                sync,
                texts,
            },
            on_commit,
        );
        Ok(Store {
            reads,
            writes,
            backend,
            search,
        })
    }

    /// Brings SQLite's search index up to the newest committed message, in chunks that each
    /// hold the writer only briefly; at once when nothing is new.
    pub async fn catch_up_search(&self) -> StoreResult<()> {
        let target = self.search.newest.load(Ordering::Relaxed);
        if self.search.indexed.load(Ordering::Relaxed) >= target {
            return Ok(());
        }
        let _running = self.search.running.lock().await;
        while self.search.indexed.load(Ordering::Relaxed) < target {
            let WriteOutcome::Indexed { upto } = self.write(WriteOp::IndexForSearch).await? else {
                unreachable!("indexing answers with Indexed")
            };
            self.search.indexed.fetch_max(upto, Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers within two seconds (for `/health`).
    pub async fn ping(&self) -> bool {
        let ping = async {
            let mut conn = self.reads.acquire().await?;
            conn.ping().await
        };
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), ping).await,
            Ok(Ok(()))
        )
    }

    /// Runs one write through the writer task and waits for its commit.
    pub async fn write(&self, op: WriteOp) -> StoreResult<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(writer::Job { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The user of a live session: `(user, expires_at)`, or None if the session was deleted
    /// (logged out), has expired, or belongs to someone else than `user`.
    pub async fn session_user(&self, session: &str, user: UserId) -> StoreResult<Option<(UserRef, i64)>> {
        let row = sqlx::query(
            "SELECT u.id, u.name, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id = $1 AND s.user_id = $2 AND s.expires_at > $3",
        )
        .bind(session)
        .bind(user.0)
        .bind(now_ms())
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|r| {
            (
                UserRef {
                    id: UserId(r.get("id")),
                    name: r.get("name"),
                },
                r.get("expires_at"),
            )
        }))
    }

    /// Whether the user has a password (registered, not a guest).
    pub async fn is_registered(&self, user: UserId) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM users WHERE id = $1 AND password_hash IS NOT NULL")
            .bind(user.0)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.is_some())
    }

    /// A registered account by name (any case): the user and their password hash. Guests
    /// (no password) are not returned: they cannot log in.
    pub async fn account(&self, name: &str) -> StoreResult<Option<(UserRef, String)>> {
        let row = sqlx::query(
            "SELECT id, name, password_hash FROM users WHERE name_key = $1 AND password_hash IS NOT NULL",
        )
        .bind(name_key(name))
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|r| {
            (
                UserRef {
                    id: UserId(r.get("id")),
                    name: r.get("name"),
                },
                r.get("password_hash"),
            )
        }))
    }

    pub async fn user(&self, id: UserId) -> StoreResult<Option<UserRef>> {
        let row = sqlx::query("SELECT id, name FROM users WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| UserRef {
            id: UserId(r.get("id")),
            name: r.get("name"),
        }))
    }

    pub async fn is_member(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM memberships WHERE room_id = $1 AND user_id = $2")
            .bind(room.0)
            .bind(user.0)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.is_some())
    }

    /// The room's kind and newest sequence number, or `NoSuchRoom`.
    pub async fn room_head(&self, room: RoomId) -> StoreResult<(RoomKind, Seq)> {
        let row = sqlx::query("SELECT kind, last_seq FROM rooms WHERE id = $1")
            .bind(room.0)
            .fetch_optional(&self.reads)
            .await?
            .ok_or(StoreError::NoSuchRoom)?;
        Ok((parse_kind(row.get("kind")), Seq(row.get("last_seq"))))
    }

    /// Rooms `user` belongs to, with unread counts; online counts are left at 0 for the caller.
    pub async fn rooms_of(&self, user: UserId) -> StoreResult<Vec<RoomInfo>> {
        let rows = sqlx::query(ROOMS_OF).bind(user.0).fetch_all(&self.reads).await?;
        Ok(rows.iter().map(|row| room_info(row, true)).collect())
    }

    /// One room as `user` sees it (for `joined`).
    pub async fn room_for(&self, room: RoomId, user: UserId) -> StoreResult<RoomInfo> {
        self.rooms_of(user)
            .await?
            .into_iter()
            .find(|r| r.id == room)
            .ok_or(StoreError::NoSuchRoom)
    }

    /// Public rooms with member counts, and whether `user` is in each.
    pub async fn public_rooms(&self, user: UserId) -> StoreResult<Vec<RoomInfo>> {
        let rows = sqlx::query(
            "SELECT r.id, r.name, r.kind, r.topic, r.last_seq, r.board_open,
                    r.member_count AS members,
                    0 AS unread, NULL AS peer_id, NULL AS peer_name, 'member' AS role,
                    CASE WHEN EXISTS (SELECT 1 FROM memberships m WHERE m.room_id = r.id AND m.user_id = $1) THEN 1 ELSE 0 END AS joined
             FROM rooms r WHERE r.kind = 'public' ORDER BY r.name_key",
        )
        .bind(user.0)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .iter()
            .map(|row| room_info(row, row.get::<i64, _>("joined") != 0))
            .collect())
    }

    /// Messages with `seq > after`, oldest first, at most `limit`.
    pub async fn messages_after(
        &self,
        room: RoomId,
        after: Seq,
        limit: u32,
    ) -> StoreResult<Vec<ChatMessage>> {
        let rows = sqlx::query(&format!(
            "{MESSAGE_SELECT} WHERE m.room_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3"
        ))
        .bind(room.0)
        .bind(after.0)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(message_from_row).collect())
    }

    /// The `limit` messages just before `before`, returned oldest first.
    pub async fn messages_before(
        &self,
        room: RoomId,
        before: Seq,
        limit: u32,
    ) -> StoreResult<Vec<ChatMessage>> {
        let rows = sqlx::query(&format!(
            "SELECT * FROM ({MESSAGE_SELECT} WHERE m.room_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3) AS page
             ORDER BY seq"
        ))
        .bind(room.0)
        .bind(before.0)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(message_from_row).collect())
    }

    /// Unread count of `user` in `room` (messages of others after the read mark).
    pub async fn unread(&self, room: RoomId, user: UserId) -> StoreResult<u32> {
        let row = sqlx::query(UNREAD_OF_MEMBER)
            .bind(room.0)
            .bind(user.0)
            .fetch_one(&self.reads)
            .await?;
        Ok(row.get::<i64, _>("n") as u32)
    }

    /// A room's whiteboard: its batches in drawing order and the newest board seq included.
    pub async fn board(&self, room: RoomId) -> StoreResult<(Vec<crate::protocol::BoardSegment>, i64)> {
        board::picture(&self.reads, self.backend, room).await
    }

    /// All rows of a room, for tests and integrity checks: `(seq, client_msg_id)` ascending.
    pub async fn room_sequence(&self, room: RoomId) -> StoreResult<Vec<(Seq, Option<ClientMsgId>)>> {
        let rows = sqlx::query("SELECT seq, client_msg_id FROM messages WHERE room_id = $1 ORDER BY seq")
            .bind(room.0)
            .fetch_all(&self.reads)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    Seq(r.get("seq")),
                    r.get::<Option<String>, _>("client_msg_id").map(ClientMsgId),
                )
            })
            .collect())
    }
}

/// The unread count of membership `m` in room `r`: text messages of others after the read
/// mark, among the room's newest 1,000 entries (so signing in stays cheap in rooms with long
/// backlogs or thousands of join lines). The lower bound is one expression: given two
/// `seq >` terms, SQLite bounds the index scan by the first (the read mark, often 0) and
/// filters by the second, reading the room's whole history.
macro_rules! unread_count {
    () => {
        "(SELECT COUNT(*) FROM messages msg
    WHERE msg.room_id = r.id
      AND msg.seq > CASE WHEN m.last_read_seq > r.last_seq - 1000
                         THEN m.last_read_seq ELSE r.last_seq - 1000 END
      AND msg.author_id != m.user_id AND msg.kind = 'text')"
    };
}

/// The rooms of user `$1` with their unread counts, as [`Store::rooms_of`] reads them.
const ROOMS_OF: &str = concat!(
    "SELECT r.id, r.name, r.kind, r.topic, r.last_seq, r.board_open, m.role,
            r.member_count AS members, ",
    unread_count!(),
    " AS unread,
            CASE WHEN r.kind = 'direct' THEN
              (SELECT u.id FROM memberships m3 JOIN users u ON u.id = m3.user_id
                WHERE m3.room_id = r.id AND m3.user_id != m.user_id) END AS peer_id,
            CASE WHEN r.kind = 'direct' THEN
              (SELECT u.name FROM memberships m3 JOIN users u ON u.id = m3.user_id
                WHERE m3.room_id = r.id AND m3.user_id != m.user_id) END AS peer_name
     FROM memberships m JOIN rooms r ON r.id = m.room_id
     WHERE m.user_id = $1
     ORDER BY r.kind = 'direct', r.name_key"
);

/// One member's unread count in one room, as [`Store::unread`] reads it.
const UNREAD_OF_MEMBER: &str = concat!(
    "SELECT ",
    unread_count!(),
    " AS n FROM memberships m JOIN rooms r ON r.id = m.room_id
     WHERE m.room_id = $1 AND m.user_id = $2"
);

const MESSAGE_SELECT: &str =
    "SELECT m.id, m.room_id, m.seq, m.kind, m.author_id, u.name AS author_name, m.body,
        m.created_at, m.client_msg_id, m.edited_at, m.deleted_at, m.target_seq,
        m.target_user_id, t.name AS target_name, m.attachments
     FROM messages m JOIN users u ON u.id = m.author_id LEFT JOIN users t ON t.id = m.target_user_id";

fn message_from_row(row: &AnyRow) -> ChatMessage {
    ChatMessage {
        id: MessageId(row.get("id")),
        room: RoomId(row.get("room_id")),
        seq: Seq(row.get("seq")),
        kind: parse_message_kind(row.get("kind")),
        author: UserRef {
            id: UserId(row.get("author_id")),
            name: row.get("author_name"),
        },
        text: row.get("body"),
        ts: row.get("created_at"),
        client_msg_id: row.get::<Option<String>, _>("client_msg_id").map(ClientMsgId),
        target_seq: row.get::<Option<i64>, _>("target_seq").map(Seq),
        target: row.get::<Option<i64>, _>("target_user_id").map(|id| UserRef {
            id: UserId(id),
            name: row.get("target_name"),
        }),
        edited: row.get::<Option<i64>, _>("edited_at").is_some(),
        deleted: row.get::<Option<i64>, _>("deleted_at").is_some(),
        attachments: parse_attachments(row.get("attachments")),
    }
}

/// A message's `attachments` column: a JSON array, or '' for none.
pub(crate) fn parse_attachments(column: &str) -> Vec<crate::protocol::Attachment> {
    if column.is_empty() {
        return Vec::new();
    }
    serde_json::from_str(column).unwrap_or_default()
}

fn room_info(row: &AnyRow, joined: bool) -> RoomInfo {
    let kind = parse_kind(row.get("kind"));
    let peer = row.get::<Option<i64>, _>("peer_id").map(|id| UserRef {
        id: UserId(id),
        name: row.get("peer_name"),
    });
    RoomInfo {
        id: RoomId(row.get("id")),
        name: peer
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| row.get("name")),
        kind,
        topic: row.get("topic"),
        members: row.get::<i64, _>("members") as u32,
        online: 0,
        last_seq: Seq(row.get("last_seq")),
        unread: row.get::<i64, _>("unread") as u32,
        mentions: 0,
        peer,
        joined,
        role: parse_role(row.get("role")),
        board_open: row.get::<i64, _>("board_open") != 0,
    }
}

fn parse_kind(text: &str) -> RoomKind {
    match text {
        "private" => RoomKind::Private,
        "direct" => RoomKind::Direct,
        _ => RoomKind::Public,
    }
}

/// Message kinds as stored; the one table both directions use.
const MESSAGE_KINDS: [(MessageKind, &str); 8] = [
    (MessageKind::Text, "text"),
    (MessageKind::Join, "join"),
    (MessageKind::Leave, "leave"),
    (MessageKind::Created, "created"),
    (MessageKind::Edit, "edit"),
    (MessageKind::Delete, "delete"),
    (MessageKind::Kick, "kick"),
    (MessageKind::Ban, "ban"),
];

pub(crate) fn kind_str(kind: MessageKind) -> &'static str {
    MESSAGE_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, name)| *name)
        .expect("every kind is listed")
}

fn parse_message_kind(text: &str) -> MessageKind {
    MESSAGE_KINDS
        .iter()
        .find(|(_, name)| *name == text)
        .map_or(MessageKind::Text, |(kind, _)| *kind)
}

pub(crate) fn role_str(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Moderator => "moderator",
        Role::Member => "member",
    }
}

pub(crate) fn parse_role(text: &str) -> Role {
    match text {
        "owner" => Role::Owner,
        "moderator" => Role::Moderator,
        _ => Role::Member,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn user(store: &Store, name: &str) -> UserRef {
        let op = WriteOp::CreateUser {
            name: name.into(),
            password_hash: None,
            session: NewSession {
                id: format!("session-{name}"),
                expires_at: i64::MAX,
            },
        };
        match store.write(op).await.unwrap() {
            WriteOutcome::User(user) => user,
            other => panic!("expected a user, got {other:?}"),
        }
    }

    /// A fresh database in its own folder with two users (both in `general`) and general's id.
    async fn store_with(first: &str, second: &str) -> (tempfile::TempDir, Store, UserRef, UserRef, RoomId) {
        let dir = tempfile::tempdir().unwrap();
        let url = default_database_url(dir.path());
        let store = Store::open(&url, SqliteSync::Normal, Arc::new(|_: &ChatMessage| {}))
            .await
            .unwrap();
        let (first, second) = (user(&store, first).await, user(&store, second).await);
        let general = store.rooms_of(first.id).await.unwrap()[0].id;
        (dir, store, first, second, general)
    }

    /// Appends `count` join lines by `author` to `room`, straight into the table.
    fn add_history(db: &rusqlite::Connection, room: RoomId, author: UserId, count: i64) {
        let last: i64 = db
            .query_row("SELECT last_seq FROM rooms WHERE id = ?1", [room.0], |row| {
                row.get(0)
            })
            .unwrap();
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
             INSERT INTO messages (room_id, seq, author_id, kind, body, created_at)
             SELECT ?1, ?4 + i, ?2, 'join', '', 0 FROM n",
            rusqlite::params![room.0, author.0, count, last],
        )
        .unwrap();
    }

    /// `rooms_of` for `user` run by hand: (general's unread count, SQLite VM steps taken).
    fn unread_and_steps(db: &rusqlite::Connection, general: RoomId, user: UserId) -> (i64, i32) {
        let mut statement = db.prepare(ROOMS_OF).unwrap();
        let unread = statement
            .query_map([user.0], |row| {
                Ok((row.get::<_, i64>("id")?, row.get::<_, i64>("unread")?))
            })
            .unwrap()
            .map(Result::unwrap)
            .find(|(room, _)| *room == general.0)
            .unwrap()
            .1;
        (unread, statement.get_status(rusqlite::StatementStatus::VmStep))
    }

    /// Counting unread messages reads the room's newest 1,000 entries at most, however long
    /// its history and wherever the read mark is: a sign-in in a room of 20,000 join lines
    /// costs what it costs in a room of 2,000.
    #[tokio::test]
    async fn the_unread_count_reads_only_its_window() {
        let (dir, store, ada, bob, general) = store_with("ada", "bob").await;
        let db = rusqlite::Connection::open(dir.path().join("huddle.db")).unwrap();

        add_history(&db, general, bob.id, 2_000);
        let texts = "INSERT INTO messages (room_id, seq, author_id, client_msg_id, kind, body, created_at)
                     SELECT id, last_seq + 1, ?2, ?3, 'text', 'hi', 0 FROM rooms WHERE id = ?1";
        db.execute(texts, rusqlite::params![general.0, bob.id.0, "recent"])
            .unwrap();
        let (unread_short, steps_short) = unread_and_steps(&db, general, ada.id);

        add_history(&db, general, bob.id, 18_000);
        db.execute(texts, rusqlite::params![general.0, bob.id.0, "newest"])
            .unwrap();
        let (unread_long, steps_long) = unread_and_steps(&db, general, ada.id);

        // The first text fell out of the window; the store answers the same as the query.
        assert_eq!((unread_short, unread_long), (1, 1));
        assert_eq!(store.unread(general, ada.id).await.unwrap(), 1);
        assert!(
            steps_long < steps_short * 11 / 10,
            "20,000 entries took {steps_long} VM steps, 2,000 took {steps_short}"
        );
    }

    /// Mentions newer than the search index are counted from the table, in the same
    /// statement: counting at sign-in neither waits for an indexing commit nor makes one,
    /// and finds what the index would.
    #[tokio::test]
    async fn mentions_newer_than_the_search_index_count_without_indexing_it() {
        let (_dir, store, ada, lin, general) = store_with("ada", "Lin Chen").await;
        let say = |id: &str, body: &str| WriteOp::AppendText {
            room: general,
            author: ada.clone(),
            client_msg_id: ClientMsgId(id.into()),
            body: body.into(),
            attachments: Vec::new(),
        };
        let indexed_upto = || async {
            sqlx::query_scalar::<_, i64>("SELECT indexed_upto FROM search_progress")
                .fetch_one(&store.reads)
                .await
                .unwrap()
        };
        let mentions_in_general =
            || async { store.unread_mentions(&lin).await.unwrap().get(&general).copied() };
        for (id, body) in [
            ("m1", "@Lin Chen could you look?"),
            ("m2", "`@Lin Chen` in code"),
            ("m3", "lin chen without the sign"),
            ("m4", "ping @lin chen!"),
        ] {
            store.write(say(id, body)).await.unwrap();
        }
        let before = indexed_upto().await;

        assert_eq!(mentions_in_general().await, Some(2), "from the table");
        assert_eq!(indexed_upto().await, before, "counting indexed nothing");

        store.catch_up_search().await.unwrap();
        assert!(indexed_upto().await > before);
        assert_eq!(mentions_in_general().await, Some(2), "from the index");

        store.write(say("m5", "@LIN CHEN and one more")).await.unwrap();
        assert_eq!(mentions_in_general().await, Some(3), "from both");
        let listed: Vec<String> = store
            .mentions_of(&lin)
            .await
            .unwrap()
            .into_iter()
            .map(|hit| hit.text)
            .collect();
        assert_eq!(
            listed,
            [
                "@LIN CHEN and one more",
                "ping @lin chen!",
                "@Lin Chen could you look?"
            ],
            "newest first across both"
        );
    }

    /// `mentions_of` run by hand for `user` named `name`: (candidates, SQLite VM steps).
    fn mention_candidates_and_steps(db: &rusqlite::Connection, user: UserId, name: &str) -> (usize, i32) {
        let mut statement = db.prepare(&Backend::Sqlite.mention_sql()).unwrap();
        let phrase = Backend::Sqlite.phrase_expression(&search::terms(name));
        let params = rusqlite::named_params! {"$1": user.0, "$2": phrase, "$3": 0, "$4": 1000};
        let candidates = statement.query_map(params, |_| Ok(())).unwrap().count();
        (
            candidates,
            statement.get_status(rusqlite::StatementStatus::VmStep),
        )
    }

    /// The messages newer than the search index are found by id: listing mentions reads
    /// what the index has not covered, not the history of every room the person is in.
    #[tokio::test]
    async fn mentions_read_only_what_the_search_index_has_not_covered() {
        let (dir, _store, ada, lin, general) = store_with("ada", "lin").await;
        let db = rusqlite::Connection::open(dir.path().join("huddle.db")).unwrap();
        let index_all = "UPDATE search_progress SET indexed_upto = (SELECT MAX(id) FROM messages)";
        let mention = "INSERT INTO messages (room_id, seq, author_id, client_msg_id, kind, body, created_at)
                       SELECT id, last_seq + 1, ?2, ?3, 'text', '@lin hi', 0 FROM rooms WHERE id = ?1";

        add_history(&db, general, ada.id, 2_000);
        db.execute(index_all, []).unwrap();
        db.execute(mention, rusqlite::params![general.0, ada.id.0, "a"])
            .unwrap();
        let (found_short, steps_short) = mention_candidates_and_steps(&db, lin.id, "lin");

        add_history(&db, general, ada.id, 18_000);
        db.execute(index_all, []).unwrap();
        db.execute(mention, rusqlite::params![general.0, ada.id.0, "b"])
            .unwrap();
        let (found_long, steps_long) = mention_candidates_and_steps(&db, lin.id, "lin");

        // Each time the newest mention is past the index (the first was "indexed" without
        // being put in the index, so only the table read finds any).
        assert_eq!((found_short, found_long), (1, 1));
        assert!(
            steps_long < steps_short * 11 / 10,
            "20,000 entries took {steps_long} VM steps, 2,000 took {steps_short}"
        );
    }
}
