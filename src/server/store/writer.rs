//! The single writer: every database write runs here, in the order received. Writes that
//! arrive together share one transaction and one fsync (group commit); each runs inside its own
//! savepoint so one refused write does not undo the others. After the commit, new messages are
//! published in sequence order, then each caller gets its answer.

use super::text_commits::{StoredRow, TextCommits};
use super::Backend;
use super::{is_connection_error, kind_str, now_ms, parse_role, role_str, OnCommit, StoreError, StoreResult};
use crate::protocol::{
    ChatMessage, ClientMsgId, MessageId, MessageKind, Role, RoomId, RoomKind, Seq, UserId, UserRef,
};
use crate::server::config::SqliteSync;
use crate::server::metrics::metrics;
use sqlx::{AnyConnection, Row};
use tokio::sync::{mpsc, oneshot};

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 1024;

/// A write request.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// New user with a unique name (case-insensitively) and its first session; joins
    /// `general`. `password_hash` is None for guests.
    CreateUser {
        name: String,
        password_hash: Option<String>,
        session: NewSession,
    },
    /// A session for an existing user (a log-in).
    CreateSession { user: UserId, session: NewSession },
    /// Log-out: the session's token stops working.
    DeleteSession { id: String },
    /// Housekeeping: forget sessions whose tokens have expired.
    PruneSessions,
    /// A text message; idempotent on `(author, client_msg_id)`. `attachments` are ids of
    /// files the author uploaded to the room and has not sent yet.
    AppendText {
        room: RoomId,
        author: UserRef,
        client_msg_id: ClientMsgId,
        body: String,
        attachments: Vec<String>,
    },
    /// Join a public room (no-op when already a member).
    Join { room: RoomId, user: UserRef },
    /// Leave a room (no-op when not a member).
    Leave { room: RoomId, user: UserRef },
    /// Create a room (public, or private: invite-only) with a unique name; the creator
    /// joins as its owner.
    CreateRoom {
        name: String,
        topic: String,
        creator: UserRef,
        private: bool,
        board_open: bool,
    },
    /// The owner (or an admin) changes a member's role between moderator and member.
    SetRole {
        room: RoomId,
        actor: UserRef,
        target: UserId,
        role: Role,
        admin: bool,
    },
    /// An owner or moderator (or admin) of a private room adds someone.
    Invite {
        room: RoomId,
        actor: UserRef,
        invitee: UserId,
        admin: bool,
    },
    /// Find or create the direct room of two users.
    OpenDm { user: UserRef, peer: UserId },
    /// The author changes a text message's text.
    Edit {
        room: RoomId,
        seq: Seq,
        editor: UserRef,
        text: String,
    },
    /// The author, a room moderator or an admin deletes a text message.
    Delete {
        room: RoomId,
        seq: Seq,
        actor: UserRef,
        admin: bool,
    },
    /// A moderator (or admin) removes a member; `ban` also keeps them out.
    Remove {
        room: RoomId,
        actor: UserRef,
        target: UserId,
        ban: bool,
        admin: bool,
    },
    /// Move the user's read mark forward to `seq`.
    MarkRead { room: RoomId, user: UserId, seq: Seq },
    /// A whiteboard batch from a member.
    Draw(super::NewSegment),
    /// Take back the author's newest whiteboard stroke.
    UndoStroke { room: RoomId, author: UserId },
    /// Wipe a room's whiteboard.
    ClearBoard {
        room: RoomId,
        actor: UserId,
        admin: bool,
    },
    /// Record an upload (its bytes are already in the files folder).
    AddFile(super::NewFile),
    /// SQLite only: add the next messages not yet in the search index to it.
    IndexForSearch,
}

/// Most messages one [`WriteOp::IndexForSearch`] indexes, so that it holds the writer (and
/// the acks waiting on it) for a few milliseconds at most.
const INDEX_CHUNK: i64 = 2000;

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub expires_at: i64,
}

/// A stored text message, or the earlier one with the same client id.
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: ChatMessage,
    /// True when this was a retry: nothing new was stored or published.
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub enum WriteOutcome {
    User(UserRef),
    Appended(Appended),
    /// Membership changed (or not, when `changed` is false).
    Membership {
        room: RoomId,
        changed: bool,
    },
    Done,
    /// A whiteboard change took this board seq (and, for an undo, removed this stroke).
    Board {
        seq: i64,
        stroke: Option<u32>,
    },
    /// The search index holds every message up to this id.
    Indexed {
        upto: i64,
    },
}

pub(super) struct Job {
    pub op: WriteOp,
    pub reply: oneshot::Sender<StoreResult<WriteOutcome>>,
}

/// The writer's database connection: reopened after it breaks (a database restart), so the
/// writes that fail meanwhile are refused as `Unavailable` and later ones succeed again.
pub(super) struct WriteConnection {
    pub conn: Option<AnyConnection>,
    pub options: sqlx::any::AnyConnectOptions,
    pub backend: Backend,
    pub sync: SqliteSync,
    /// SQLite only: commits batches of nothing but new text messages, off sqlx.
    pub texts: Option<TextCommits>,
}

impl WriteConnection {
    /// The sqlx connection, opened when there is none.
    async fn get(&mut self) -> sqlx::Result<&mut AnyConnection> {
        if self.conn.is_none() {
            use sqlx::{ConnectOptions, Executor};
            let mut conn = self.options.connect().await?;
            conn.execute(self.backend.session_setup(self.sync)).await?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }
}

pub(super) fn spawn(mut conn: WriteConnection, on_commit: OnCommit) -> mpsc::Sender<Job> {
    let (tx, mut rx) = mpsc::channel::<Job>(4096);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            // Woken by the first write, the writer would run before the requests that are
            // ready behind it, and each of those would wait for a commit (an fsync) of its
            // own. One yield lets them (and frames the socket poll finds) join this commit.
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH {
                let Ok(job) = rx.try_recv() else { break };
                batch.push(job);
            }
            for jobs in transactions(std::mem::take(&mut batch), conn.texts.is_some()) {
                run_batch(&mut conn, &on_commit, jobs).await;
            }
        }
    });
    tx
}

/// Splits a batch into the transactions that commit it, in order. With SQLite's text thread
/// the batch's leading run of new texts is one transaction there and the other writes
/// follow in a second one, so a join or an index chunk that arrives amid a burst of
/// messages does not send the whole burst down the general path (a savepoint per write).
/// Search indexing goes last: it only reads what is committed, so its place is free.
fn transactions(jobs: Vec<Job>, texts_thread: bool) -> Vec<Vec<Job>> {
    if !texts_thread {
        return vec![jobs];
    }
    let (mut writes, indexing): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|job| !matches!(job.op, WriteOp::IndexForSearch));
    writes.extend(indexing);
    let run = text_run(&writes).len();
    if run == 0 || run == writes.len() {
        return vec![writes];
    }
    let rest = writes.split_off(run);
    vec![writes, rest]
}

/// The text messages at the head of `jobs`, stopping before any other write or a second
/// message with the same (author, client id): a retry within the run must see the first.
fn text_run(jobs: &[Job]) -> Vec<&WriteOp> {
    let mut keys = std::collections::HashSet::new();
    jobs.iter()
        .map(|job| &job.op)
        .take_while(|op| match op {
            WriteOp::AppendText {
                author,
                client_msg_id,
                attachments,
                ..
            } if attachments.is_empty() => keys.insert((author.id, &client_msg_id.0)),
            _ => false,
        })
        .collect()
}

/// One write inside its own savepoint, so a refusal undoes only that write.
async fn apply_alone(
    conn: &mut AnyConnection,
    op: &WriteOp,
) -> sqlx::Result<(StoreResult<WriteOutcome>, Vec<ChatMessage>)> {
    sqlx::query("SAVEPOINT op").execute(&mut *conn).await?;
    let mut published = Vec::new();
    let result = apply(conn, op, &mut published).await;
    if result.is_ok() {
        sqlx::query("RELEASE op").execute(&mut *conn).await?;
    } else {
        sqlx::query("ROLLBACK TO op").execute(&mut *conn).await?;
        sqlx::query("RELEASE op").execute(&mut *conn).await?;
        published.clear();
    }
    Ok((result, published))
}

/// Each job's answer and the messages it stored, in job order.
type BatchResults = Vec<(StoreResult<WriteOutcome>, Vec<ChatMessage>)>;

/// Attempts at a batch that lost a race with another node's writer (PostgreSQL only).
const BATCH_ATTEMPTS: usize = 3;

async fn run_batch(connection: &mut WriteConnection, on_commit: &OnCommit, jobs: Vec<Job>) {
    let started = std::time::Instant::now();
    let size = jobs.len();
    let left_out = match &connection.texts {
        Some(texts) if text_run(&jobs).len() == jobs.len() => commit_texts(texts, on_commit, jobs).await,
        _ => jobs,
    };
    if !left_out.is_empty() {
        run_general(connection, on_commit, left_out).await;
    }
    let metrics = metrics();
    metrics
        .store_commit_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.store_batch_size.observe(size as f64);
}

/// The hot path: a batch of nothing but new text messages, committed by the SQLite thread
/// in one hand-off, then answered and published. Returns the messages it left out
/// (retries, authors who are not members): they stored nothing, and the general path
/// answers them in a transaction of their own. Should that one fail, the committed
/// messages are already answered and published.
async fn commit_texts(texts: &TextCommits, on_commit: &OnCommit, jobs: Vec<Job>) -> Vec<Job> {
    let run = text_run(&jobs);
    let ts = now_ms();
    let stored = match texts.append(run_json(&run), ts).await {
        Ok(stored) => stored,
        Err(error) => {
            refuse(jobs, &error);
            return Vec::new();
        }
    };
    let appended = appended(&run, stored.into_iter(), ts);
    let mut left_out = Vec::new();
    for (job, stored) in jobs.into_iter().zip(appended) {
        match stored {
            Some(appended) => {
                on_commit(&appended.message);
                let _ = job.reply.send(Ok(WriteOutcome::Appended(appended)));
            }
            None => left_out.push(job),
        }
    }
    left_out
}

/// The general path: the whole batch in one transaction, tried again when it lost a race
/// with another node's writer, then answered and published in job order.
async fn run_general(connection: &mut WriteConnection, on_commit: &OnCommit, jobs: Vec<Job>) {
    let mut attempt = 0;
    let backend = connection.backend;
    let outcome = loop {
        attempt += 1;
        let conn = match connection.get().await {
            Ok(conn) => conn,
            Err(error) => break Err(error),
        };
        let result = try_mixed_batch(conn, backend, &jobs).await;
        if let Err(error) = &result {
            tracing::warn!(%error, attempt, "write batch failed; rolling back");
            if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() || is_connection_error(error) {
                connection.conn = None;
            }
            if is_lost_race(error) && attempt < BATCH_ATTEMPTS {
                continue;
            }
        }
        break result;
    };
    match outcome {
        Ok(results) => {
            for (job, (result, published)) in jobs.into_iter().zip(results) {
                for message in &published {
                    on_commit(message);
                }
                let _ = job.reply.send(result);
            }
        }
        Err(error) => refuse(jobs, &error),
    }
}

/// Answers every job of a batch that did not commit: `Unavailable` when the database could
/// not be reached (the client may retry), otherwise the failure itself.
fn refuse(jobs: Vec<Job>, error: &sqlx::Error) {
    tracing::error!(%error, "write batch refused");
    for job in jobs {
        let answer = if is_connection_error(error) {
            StoreError::Unavailable
        } else {
            StoreError::Db(sqlx::Error::Protocol(format!("batch failed: {error}")))
        };
        let _ = job.reply.send(Err(answer));
    }
}

/// Another node's concurrent write won (deadlock, serialization failure, or the same
/// client message id inserted first): running the batch again sees its result.
fn is_lost_race(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40P01" | "40001" | "23505")))
}

/// The general path: every write in its own savepoint, except runs of new text messages.
async fn try_mixed_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    jobs: &[Job],
) -> sqlx::Result<BatchResults> {
    let mut results = Vec::with_capacity(jobs.len());
    sqlx::query(backend.begin_write()).execute(&mut *conn).await?;
    lock_rooms(conn, backend, jobs).await?;
    let mut next = 0;
    while next < jobs.len() {
        // The common case, new text messages from members, goes in runs of one statement
        // each and needs no savepoint (a statement that fails changes nothing).
        let run = text_run(&jobs[next..]);
        if !run.is_empty() {
            let appended = append_run(conn, backend.append_texts(), &run).await?;
            let run_start = next;
            next += run.len();
            for (offset, appended) in appended.into_iter().enumerate() {
                let result = match appended {
                    Some(appended) => (
                        Ok(WriteOutcome::Appended(appended.clone())),
                        vec![appended.message],
                    ),
                    None => apply_alone(conn, &jobs[run_start + offset].op).await?,
                };
                results.push(result);
            }
            continue;
        }
        results.push(apply_alone(conn, &jobs[next].op).await?);
        next += 1;
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(results)
}

/// The room whose timeline or board a write may extend (`None`: it creates rooms or touches
/// none; `CreateUser` extends `general`, marked by `RoomId(0)`).
fn room_extended_by(op: &WriteOp) -> Option<RoomId> {
    match op {
        WriteOp::AppendText { room, .. }
        | WriteOp::Join { room, .. }
        | WriteOp::Leave { room, .. }
        | WriteOp::Invite { room, .. }
        | WriteOp::Edit { room, .. }
        | WriteOp::Delete { room, .. }
        | WriteOp::Remove { room, .. }
        | WriteOp::UndoStroke { room, .. }
        | WriteOp::ClearBoard { room, .. } => Some(*room),
        WriteOp::Draw(segment) => Some(segment.room),
        WriteOp::CreateUser { .. } => Some(RoomId(0)),
        _ => None,
    }
}

/// On PostgreSQL, several nodes write at once: the batch first locks the rows of every room
/// it extends, in id order (no deadlock between writers), so each statement that reads a
/// room's `last_seq` sees the newest committed value and seqs stay gapless and unique. On
/// SQLite, `BEGIN IMMEDIATE` already made this writer the only one.
async fn lock_rooms(conn: &mut AnyConnection, backend: Backend, jobs: &[Job]) -> sqlx::Result<()> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let mut rooms: Vec<i64> = jobs
        .iter()
        .filter_map(|job| room_extended_by(&job.op))
        .map(|r| r.0)
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    if rooms.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT id FROM rooms
         WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))
            OR ($2 AND name_key = 'general')
         ORDER BY id FOR UPDATE",
    )
    .bind(serde_json::to_string(&rooms).expect("ids serialize"))
    .bind(rooms.first() == Some(&0))
    .fetch_all(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_session(conn: &mut AnyConnection, user: UserId, session: &NewSession) -> StoreResult<()> {
    sqlx::query("INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(&session.id)
        .bind(user.0)
        .bind(now_ms())
        .bind(session.expires_at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn apply(
    conn: &mut AnyConnection,
    op: &WriteOp,
    published: &mut Vec<ChatMessage>,
) -> StoreResult<WriteOutcome> {
    match op {
        WriteOp::CreateSession { user, session } => {
            insert_session(conn, *user, session).await?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::IndexForSearch => {
            let (from, newest): (i64, i64) = sqlx::query_as(
                "SELECT indexed_upto, COALESCE((SELECT MAX(id) FROM messages), 0) FROM search_progress",
            )
            .fetch_one(&mut *conn)
            .await?;
            let upto = newest.min(from + INDEX_CHUNK);
            if upto > from {
                sqlx::query(
                    "INSERT INTO messages_fts (rowid, body)
                     SELECT id, body FROM messages
                     WHERE id > $1 AND id <= $2 AND kind = 'text' AND deleted_at IS NULL ORDER BY id",
                )
                .bind(from)
                .bind(upto)
                .execute(&mut *conn)
                .await?;
                sqlx::query("UPDATE search_progress SET indexed_upto = $1")
                    .bind(upto)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(WriteOutcome::Indexed { upto: upto.max(from) })
        }
        WriteOp::PruneSessions => {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(now_ms())
                .execute(&mut *conn)
                .await?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::DeleteSession { id } => {
            sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::CreateUser {
            name,
            password_hash,
            session,
        } => {
            let inserted = sqlx::query(
                "INSERT INTO users (name, name_key, password_hash, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(name)
            .bind(super::name_key(name))
            .bind(password_hash)
            .bind(now_ms())
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = inserted else {
                return Err(StoreError::NameTaken);
            };
            let user = UserRef {
                id: UserId(row.get("id")),
                name: name.clone(),
            };
            let general: i64 = sqlx::query("SELECT id FROM rooms WHERE name_key = 'general'")
                .fetch_one(&mut *conn)
                .await?
                .get("id");
            add_member(conn, RoomId(general), &user, MessageKind::Join, published).await?;
            insert_session(conn, user.id, session).await?;
            Ok(WriteOutcome::User(user))
        }
        WriteOp::AppendText {
            room,
            author,
            client_msg_id,
            body,
            attachments,
        } => {
            // A retry gets the original's ack, even if the author has left the room since.
            if let Some(existing) = find_by_client_id(conn, author, client_msg_id).await? {
                if existing.room == *room {
                    return Ok(WriteOutcome::Appended(Appended {
                        message: existing,
                        duplicate: true,
                    }));
                }
                // Same id, other room: refuse, without revealing rooms the author cannot see.
                require_member(conn, *room, author.id).await?;
                return Err(StoreError::IdReused);
            }
            require_member(conn, *room, author.id).await?;
            let mut message =
                insert_message(conn, *room, author, MessageKind::Text, body, Some(client_msg_id)).await?;
            if !attachments.is_empty() {
                message.attachments = super::files::attach(conn, &message, attachments).await?;
            }
            published.push(message.clone());
            Ok(WriteOutcome::Appended(Appended {
                message,
                duplicate: false,
            }))
        }
        WriteOp::Edit {
            room,
            seq,
            editor,
            text,
        } => {
            member_role(conn, *room, editor.id).await?;
            if text_author(conn, *room, *seq).await? != editor.id {
                return Err(StoreError::Forbidden);
            }
            published.push(amend(conn, *room, *seq, editor, MessageKind::Edit, text).await?);
            Ok(WriteOutcome::Done)
        }
        WriteOp::Delete {
            room,
            seq,
            actor,
            admin,
        } => {
            let role = member_role(conn, *room, actor.id).await?;
            let author = text_author(conn, *room, *seq).await?;
            if author != actor.id && !role.moderates() && !admin {
                return Err(StoreError::Forbidden);
            }
            published.push(amend(conn, *room, *seq, actor, MessageKind::Delete, "").await?);
            Ok(WriteOutcome::Done)
        }
        WriteOp::Remove {
            room,
            actor,
            target,
            ban,
            admin,
        } => {
            if room_kind(conn, *room).await? == RoomKind::Direct {
                return Err(StoreError::Forbidden);
            }
            let actor_role = member_role(conn, *room, actor.id).await?;
            if !actor_role.moderates() && !admin {
                return Err(StoreError::Forbidden);
            }
            let target_role = sqlx::query("SELECT role FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room.0)
                .bind(target.0)
                .fetch_optional(&mut *conn)
                .await?
                .map(|row| parse_role(row.get("role")));
            // Owners stay; nobody removes themselves this way (that is `leave`).
            if *target == actor.id || target_role == Some(Role::Owner) {
                return Err(StoreError::Forbidden);
            }
            if target_role.is_none() && !ban {
                return Err(StoreError::TargetNotMember);
            }
            let name: String = sqlx::query("SELECT name FROM users WHERE id = $1")
                .bind(target.0)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::TargetNotMember)?
                .get("name");
            let removed = UserRef { id: *target, name };
            sqlx::query("DELETE FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room.0)
                .bind(target.0)
                .execute(&mut *conn)
                .await?;
            if *ban {
                sqlx::query(
                    "INSERT INTO bans (room_id, user_id, banned_by, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                )
                .bind(room.0)
                .bind(target.0)
                .bind(actor.id.0)
                .bind(now_ms())
                .execute(&mut *conn)
                .await?;
            }
            let event = NewRow {
                room: *room,
                author: actor,
                kind: if *ban { MessageKind::Ban } else { MessageKind::Kick },
                body: "",
                client_msg_id: None,
                target_seq: None,
                target: Some(&removed),
            };
            published.push(insert_row(conn, event).await?);
            Ok(WriteOutcome::Done)
        }
        WriteOp::SetRole {
            room,
            actor,
            target,
            role,
            admin,
        } => {
            let actor_role = member_role(conn, *room, actor.id).await?;
            // Ownership is not handed over this way, and owners are not demoted.
            if (actor_role != Role::Owner && !admin) || *role == Role::Owner || *target == actor.id {
                return Err(StoreError::Forbidden);
            }
            let changed = sqlx::query(
                "UPDATE memberships SET role = $1 WHERE room_id = $2 AND user_id = $3 AND role != 'owner'",
            )
            .bind(role_str(*role))
            .bind(room.0)
            .bind(target.0)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if changed == 0 {
                return Err(StoreError::TargetNotMember);
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::Invite {
            room,
            actor,
            invitee,
            admin,
        } => {
            if room_kind(conn, *room).await? != RoomKind::Private {
                return Err(StoreError::NotPrivate);
            }
            let role = member_role(conn, *room, actor.id).await?;
            if !role.moderates() && !admin {
                return Err(StoreError::Forbidden);
            }
            let name: String = sqlx::query("SELECT name FROM users WHERE id = $1")
                .bind(invitee.0)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NoSuchUser)?
                .get("name");
            let banned = sqlx::query("SELECT 1 FROM bans WHERE room_id = $1 AND user_id = $2")
                .bind(room.0)
                .bind(invitee.0)
                .fetch_optional(&mut *conn)
                .await?;
            if banned.is_some() {
                return Err(StoreError::Banned);
            }
            let user = UserRef { id: *invitee, name };
            let changed = add_member(conn, *room, &user, MessageKind::Join, published).await?;
            Ok(WriteOutcome::Membership { room: *room, changed })
        }
        WriteOp::Join { room, user } => {
            let kind = room_kind(conn, *room).await?;
            if kind != RoomKind::Public {
                // Private and direct rooms are invisible to non-members.
                if !is_member(conn, *room, user.id).await? {
                    return Err(StoreError::NoSuchRoom);
                }
                return Ok(WriteOutcome::Membership {
                    room: *room,
                    changed: false,
                });
            }
            let banned = sqlx::query("SELECT 1 FROM bans WHERE room_id = $1 AND user_id = $2")
                .bind(room.0)
                .bind(user.id.0)
                .fetch_optional(&mut *conn)
                .await?;
            if banned.is_some() {
                return Err(StoreError::Banned);
            }
            let changed = add_member(conn, *room, user, MessageKind::Join, published).await?;
            Ok(WriteOutcome::Membership { room: *room, changed })
        }
        WriteOp::Leave { room, user } => {
            room_kind(conn, *room).await?;
            let removed = sqlx::query("DELETE FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room.0)
                .bind(user.id.0)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                > 0;
            if removed {
                published.push(insert_message(conn, *room, user, MessageKind::Leave, "", None).await?);
            }
            Ok(WriteOutcome::Membership {
                room: *room,
                changed: removed,
            })
        }
        WriteOp::CreateRoom {
            name,
            topic,
            creator,
            private,
            board_open,
        } => {
            let inserted = sqlx::query(
                "INSERT INTO rooms (name, name_key, kind, topic, created_by, created_at, board_open)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(name)
            .bind(super::name_key(name))
            .bind(if *private { "private" } else { "public" })
            .bind(topic)
            .bind(creator.id.0)
            .bind(now_ms())
            .bind(i64::from(*board_open))
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = inserted else {
                return Err(StoreError::NameTaken);
            };
            let room = RoomId(row.get("id"));
            add_member(conn, room, creator, MessageKind::Created, published).await?;
            sqlx::query("UPDATE memberships SET role = $1 WHERE room_id = $2 AND user_id = $3")
                .bind(role_str(Role::Owner))
                .bind(room.0)
                .bind(creator.id.0)
                .execute(&mut *conn)
                .await?;
            Ok(WriteOutcome::Membership { room, changed: true })
        }
        WriteOp::OpenDm { user, peer } => {
            if sqlx::query("SELECT 1 FROM users WHERE id = $1")
                .bind(peer.0)
                .fetch_optional(&mut *conn)
                .await?
                .is_none()
                || *peer == user.id
            {
                return Err(StoreError::NoSuchRoom);
            }
            let (low, high) = if user.id < *peer {
                (user.id, *peer)
            } else {
                (*peer, user.id)
            };
            let key = format!("dm:{low}:{high}");
            let inserted = sqlx::query(
                "INSERT INTO rooms (name, name_key, kind, created_by, created_at)
                 VALUES ($1, $2, 'direct', $3, $4) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(&key)
            .bind(&key)
            .bind(user.id.0)
            .bind(now_ms())
            .fetch_optional(&mut *conn)
            .await?;
            match inserted {
                Some(row) => {
                    let room = RoomId(row.get("id"));
                    let now = now_ms();
                    for member in [low, high] {
                        sqlx::query(
                            "INSERT INTO memberships (room_id, user_id, joined_at) VALUES ($1, $2, $3)",
                        )
                        .bind(room.0)
                        .bind(member.0)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(WriteOutcome::Membership { room, changed: true })
                }
                None => {
                    let id: i64 = sqlx::query("SELECT id FROM rooms WHERE name_key = $1")
                        .bind(&key)
                        .fetch_one(&mut *conn)
                        .await?
                        .get("id");
                    Ok(WriteOutcome::Membership {
                        room: RoomId(id),
                        changed: false,
                    })
                }
            }
        }
        WriteOp::MarkRead { room, user, seq } => {
            sqlx::query(
                "UPDATE memberships SET last_read_seq = (SELECT CASE WHEN $1 < last_seq THEN $1 ELSE last_seq END
                                                         FROM rooms WHERE id = $2)
                 WHERE room_id = $2 AND user_id = $3
                   AND last_read_seq < (SELECT CASE WHEN $1 < last_seq THEN $1 ELSE last_seq END
                                        FROM rooms WHERE id = $2)",
            )
            .bind(seq.0)
            .bind(room.0)
            .bind(user.0)
            .execute(&mut *conn)
            .await?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Draw(segment) => Ok(WriteOutcome::Board {
            seq: super::board::draw(conn, segment).await?,
            stroke: None,
        }),
        WriteOp::UndoStroke { room, author } => {
            let (seq, stroke) = super::board::undo(conn, *room, *author).await?;
            Ok(WriteOutcome::Board {
                seq,
                stroke: Some(stroke),
            })
        }
        WriteOp::AddFile(file) => {
            require_member(conn, file.room, file.uploader).await?;
            super::files::insert(conn, file).await?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::ClearBoard { room, actor, admin } => Ok(WriteOutcome::Board {
            seq: super::board::clear(conn, *room, *actor, *admin).await?,
            stroke: None,
        }),
    }
}

pub(super) async fn room_kind(conn: &mut AnyConnection, room: RoomId) -> StoreResult<RoomKind> {
    let row = sqlx::query("SELECT kind FROM rooms WHERE id = $1")
        .bind(room.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NoSuchRoom)?;
    Ok(super::parse_kind(row.get("kind")))
}

async fn is_member(conn: &mut AnyConnection, room: RoomId, user: UserId) -> StoreResult<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM memberships WHERE room_id = $1 AND user_id = $2")
            .bind(room.0)
            .bind(user.0)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// `NotMember` for members-to-be of visible rooms; `NoSuchRoom` when the room does not exist
/// or is private to others.
pub(super) async fn require_member(conn: &mut AnyConnection, room: RoomId, user: UserId) -> StoreResult<()> {
    if is_member(conn, room, user).await? {
        return Ok(());
    }
    match room_kind(conn, room).await? {
        RoomKind::Public => Err(StoreError::NotMember),
        _ => Err(StoreError::NoSuchRoom),
    }
}

/// Adds a membership and its system line; false when the user was already a member.
async fn add_member(
    conn: &mut AnyConnection,
    room: RoomId,
    user: &UserRef,
    line: MessageKind,
    published: &mut Vec<ChatMessage>,
) -> StoreResult<bool> {
    let added = sqlx::query(
        "INSERT INTO memberships (room_id, user_id, joined_at, last_read_seq)
         VALUES ($1, $2, $3, (SELECT last_seq FROM rooms WHERE id = $4)) ON CONFLICT DO NOTHING",
    )
    .bind(room.0)
    .bind(user.id.0)
    .bind(now_ms())
    .bind(room.0)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if added {
        published.push(insert_message(conn, room, user, line, "", None).await?);
    }
    Ok(added)
}

async fn find_by_client_id(
    conn: &mut AnyConnection,
    author: &UserRef,
    client_msg_id: &ClientMsgId,
) -> StoreResult<Option<ChatMessage>> {
    let row = sqlx::query(
        "SELECT id, room_id, seq, body, created_at, attachments FROM messages WHERE author_id = $1 AND client_msg_id = $2",
    )
    .bind(author.id.0)
    .bind(&client_msg_id.0)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|row| ChatMessage {
        id: MessageId(row.get("id")),
        room: RoomId(row.get("room_id")),
        seq: Seq(row.get("seq")),
        kind: MessageKind::Text,
        author: author.clone(),
        text: row.get("body"),
        ts: row.get("created_at"),
        client_msg_id: Some(client_msg_id.clone()),
        target_seq: None,
        target: None,
        edited: false,
        deleted: false,
        attachments: super::parse_attachments(row.get("attachments")),
    }))
}

/// A row for the room's timeline; what `insert_row` stores under the next seq.
struct NewRow<'a> {
    room: RoomId,
    author: &'a UserRef,
    kind: MessageKind,
    body: &'a str,
    client_msg_id: Option<&'a ClientMsgId>,
    target_seq: Option<Seq>,
    target: Option<&'a UserRef>,
}

/// A plain message or system line (no target).
async fn insert_message(
    conn: &mut AnyConnection,
    room: RoomId,
    author: &UserRef,
    kind: MessageKind,
    body: &str,
    client_msg_id: Option<&ClientMsgId>,
) -> StoreResult<ChatMessage> {
    let row = NewRow {
        room,
        author,
        kind,
        body,
        client_msg_id,
        target_seq: None,
        target: None,
    };
    insert_row(conn, row).await
}

/// New text messages from members of their rooms, all in one statement: each takes its
/// room's `last_seq` plus its rank among the run's messages for that room (the trigger
/// `messages_advance_room_seq` then advances the room). Messages that are retries or whose
/// author is not a member are left out (None): the general path works out which. Callers
/// pass distinct (author, client id) pairs, so nothing left out can leave a seq gap.
async fn append_run(
    conn: &mut AnyConnection,
    sql: &str,
    ops: &[&WriteOp],
) -> sqlx::Result<Vec<Option<Appended>>> {
    let ts = now_ms();
    // The window function reads every room's last_seq before the first row is inserted.
    let inserted = sqlx::query(sql)
        .bind(run_json(ops))
        .bind(ts)
        .fetch_all(&mut *conn)
        .await?;
    let stored = inserted.into_iter().map(|row| {
        (
            row.get("id"),
            row.get("seq"),
            row.get("author_id"),
            row.get("client_msg_id"),
        )
    });
    Ok(appended(ops, stored, ts))
}

/// The run as the append statement takes it: a JSON array of `[room, author, client id, body]`.
fn run_json(ops: &[&WriteOp]) -> String {
    let rows: Vec<serde_json::Value> = ops
        .iter()
        .map(|op| match op {
            WriteOp::AppendText {
                room,
                author,
                client_msg_id,
                body,
                ..
            } => serde_json::json!([room.0, author.id.0, client_msg_id.0, body]),
            _ => serde_json::Value::Null,
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// Each op's stored message, matched to the rows the append statement returned by
/// (author, client id); None for the ops it left out.
fn appended(ops: &[&WriteOp], stored: impl Iterator<Item = StoredRow>, ts: i64) -> Vec<Option<Appended>> {
    let mut results: Vec<Option<Appended>> = vec![None; ops.len()];
    let index_of: std::collections::HashMap<(i64, &str), usize> = ops
        .iter()
        .enumerate()
        .filter_map(|(index, op)| match op {
            WriteOp::AppendText {
                author,
                client_msg_id,
                ..
            } => Some(((author.id.0, client_msg_id.0.as_str()), index)),
            _ => None,
        })
        .collect();
    for (id, seq, author_id, client_id) in stored {
        let Some(&index) = index_of.get(&(author_id, client_id.as_str())) else {
            continue;
        };
        let WriteOp::AppendText {
            room,
            author,
            client_msg_id,
            body,
            ..
        } = ops[index]
        else {
            continue;
        };
        results[index] = Some(Appended {
            message: ChatMessage {
                id: MessageId(id),
                room: *room,
                seq: Seq(seq),
                kind: MessageKind::Text,
                author: author.clone(),
                text: body.clone(),
                ts,
                client_msg_id: Some(client_msg_id.clone()),
                target_seq: None,
                target: None,
                edited: false,
                deleted: false,
                attachments: Vec::new(),
            },
            duplicate: false,
        });
    }
    results
}

/// Stores the row under the room's next sequence number (the trigger advances the room).
async fn insert_row(conn: &mut AnyConnection, row: NewRow<'_>) -> StoreResult<ChatMessage> {
    let ts = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO messages (room_id, seq, author_id, client_msg_id, kind, body, created_at,
                               target_seq, target_user_id)
         SELECT id, last_seq + 1, $1, $2, $3, $4, $5, $6, $7 FROM rooms WHERE id = $8
         RETURNING id, seq",
    )
    .bind(row.author.id.0)
    .bind(row.client_msg_id.map(|c| c.0.as_str()))
    .bind(kind_str(row.kind))
    .bind(row.body)
    .bind(ts)
    .bind(row.target_seq.map(|s| s.0))
    .bind(row.target.map(|t| t.id.0))
    .bind(row.room.0)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NoSuchRoom)?;
    let seq: i64 = inserted.get("seq");
    Ok(ChatMessage {
        id: MessageId(inserted.get("id")),
        room: row.room,
        seq: Seq(seq),
        kind: row.kind,
        author: row.author.clone(),
        text: row.body.to_owned(),
        ts,
        client_msg_id: row.client_msg_id.cloned(),
        target_seq: row.target_seq,
        target: row.target.cloned(),
        edited: false,
        deleted: false,
        attachments: Vec::new(),
    })
}

/// Changes a text message (edit: new text; delete: text erased) and records the change as an
/// event with its own seq, so clients that resume later learn of it like any message.
async fn amend(
    conn: &mut AnyConnection,
    room: RoomId,
    seq: Seq,
    actor: &UserRef,
    kind: MessageKind,
    body: &str,
) -> StoreResult<ChatMessage> {
    let update = match kind {
        MessageKind::Edit => "UPDATE messages SET body = $1, edited_at = $2 WHERE room_id = $3 AND seq = $4",
        // A deleted message keeps neither its text nor its files.
        _ => {
            "UPDATE messages SET body = $1, deleted_at = $2, attachments = '' WHERE room_id = $3 AND seq = $4"
        }
    };
    sqlx::query(update)
        .bind(body)
        .bind(now_ms())
        .bind(room.0)
        .bind(seq.0)
        .execute(&mut *conn)
        .await?;
    let event = NewRow {
        room,
        author: actor,
        kind,
        body,
        client_msg_id: None,
        target_seq: Some(seq),
        target: None,
    };
    insert_row(conn, event).await
}

/// The caller's role in a room; `NotMember`/`NoSuchRoom` like `require_member` otherwise.
pub(super) async fn member_role(conn: &mut AnyConnection, room: RoomId, user: UserId) -> StoreResult<Role> {
    let row = sqlx::query("SELECT role FROM memberships WHERE room_id = $1 AND user_id = $2")
        .bind(room.0)
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(parse_role(row.get("role"))),
        None => require_member(conn, room, user).await.map(|()| Role::Member),
    }
}

/// Author of a live (not deleted) text message, or `NoSuchMessage`.
async fn text_author(conn: &mut AnyConnection, room: RoomId, seq: Seq) -> StoreResult<UserId> {
    sqlx::query(
        "SELECT author_id FROM messages
         WHERE room_id = $1 AND seq = $2 AND kind = 'text' AND deleted_at IS NULL",
    )
    .bind(room.0)
    .bind(seq.0)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| UserId(row.get("author_id")))
    .ok_or(StoreError::NoSuchMessage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::Store;
    use std::sync::{Arc, Mutex};

    fn text(room: RoomId, author: &UserRef, id: &str) -> WriteOp {
        WriteOp::AppendText {
            room,
            author: author.clone(),
            client_msg_id: ClientMsgId(id.into()),
            body: format!("text of {id}"),
            attachments: Vec::new(),
        }
    }

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

    /// One batch mixing rooms, a retry inside the run and a non-member: every stored message
    /// gets the next seq of its room, gapless, published in seq order; the retry and the
    /// refusal take none.
    type Published = Arc<Mutex<Vec<(RoomId, Seq)>>>;

    /// A fresh database with alice in `general` and `side`, bob only in `general`.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        published: Published,
        alice: UserRef,
        bob: UserRef,
        general: RoomId,
        side: RoomId,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let published = Arc::new(Mutex::new(Vec::new()));
        let sink = published.clone();
        let on_commit: crate::server::store::OnCommit =
            Arc::new(move |m: &ChatMessage| sink.lock().unwrap().push((m.room, m.seq)));
        let url = crate::server::store::default_database_url(dir.path());
        let store = Store::open(&url, SqliteSync::Full, on_commit).await.unwrap();
        let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
        let side = match store
            .write(WriteOp::CreateRoom {
                name: "side".into(),
                topic: String::new(),
                creator: alice.clone(),
                private: false,
                board_open: false,
            })
            .await
            .unwrap()
        {
            WriteOutcome::Membership { room, .. } => room,
            other => panic!("expected a room, got {other:?}"),
        };
        let general = store.rooms_of(bob.id).await.unwrap()[0].id;
        published.lock().unwrap().clear();
        Fixture {
            _dir: dir,
            store,
            published,
            alice,
            bob,
            general,
            side,
        }
    }

    /// The seq of a stored message.
    fn seq_of(outcome: WriteOutcome) -> Seq {
        match outcome {
            WriteOutcome::Appended(a) => a.message.seq,
            other => panic!("expected an append, got {other:?}"),
        }
    }

    async fn seqs(store: &Store, room: RoomId) -> Vec<i64> {
        store
            .room_sequence(room)
            .await
            .unwrap()
            .iter()
            .map(|(s, _)| s.0)
            .collect()
    }

    #[tokio::test]
    async fn a_batch_of_texts_takes_contiguous_seqs_per_room() {
        let Fixture {
            _dir,
            store,
            published,
            alice,
            bob,
            general,
            side,
        } = fixture().await;
        let (general_before, side_before) = (
            store.room_head(general).await.unwrap().1,
            store.room_head(side).await.unwrap().1,
        );

        // Queued before the writer runs (single-threaded test runtime): one batch.
        let ops = [
            text(general, &alice, "a1"),
            text(side, &alice, "a2"),
            text(general, &bob, "b1"),
            text(side, &bob, "b2"),      // bob is not in `side`
            text(general, &alice, "a1"), // retry inside the run
            text(side, &alice, "a3"),
            text(general, &bob, "b3"),
        ];
        let outcomes = futures::future::join_all(ops.into_iter().map(|op| store.write(op))).await;
        let answers: Vec<Option<(i64, bool)>> = outcomes
            .iter()
            .map(|o| match o {
                Ok(WriteOutcome::Appended(a)) => Some((a.message.seq.0, a.duplicate)),
                _ => None,
            })
            .collect();
        let (g, s) = (general_before.0, side_before.0);
        assert_eq!(
            answers,
            vec![
                Some((g + 1, false)),
                Some((s + 1, false)),
                Some((g + 2, false)),
                None,
                Some((g + 1, true)),
                Some((s + 2, false)),
                Some((g + 3, false)),
            ]
        );
        assert!(
            matches!(outcomes[3], Err(StoreError::NotMember)),
            "{:?}",
            outcomes[3]
        );
        for room in [general, side] {
            let stored = seqs(&store, room).await;
            assert_eq!(
                stored,
                (1..=stored.len() as i64).collect::<Vec<_>>(),
                "room {room:?} has a gap"
            );
        }
        assert_eq!(
            *published.lock().unwrap(),
            vec![
                (general, Seq(g + 1)),
                (side, Seq(s + 1)),
                (general, Seq(g + 2)),
                (side, Seq(s + 2)),
                (general, Seq(g + 3)),
            ]
        );
        assert_eq!(store.room_head(general).await.unwrap().1, Seq(g + 3));
    }

    /// A batch of nothing but new texts is committed whole by the SQLite thread; a retry of
    /// an earlier message and a non-member's message in it are answered afterwards, and no
    /// connection is left inside a transaction.
    #[tokio::test]
    async fn a_batch_of_only_new_texts_is_committed_whole() {
        let Fixture {
            _dir,
            store,
            published,
            alice,
            bob,
            general,
            side,
        } = fixture().await;
        let earlier = seq_of(store.write(text(general, &alice, "early")).await.unwrap());
        published.lock().unwrap().clear();
        let ops = [
            text(general, &bob, "b1"),
            text(side, &bob, "b2"),         // bob is not in `side`
            text(general, &alice, "early"), // a retry of a stored message
            text(side, &alice, "a1"),
        ];
        let outcomes = futures::future::join_all(ops.into_iter().map(|op| store.write(op))).await;
        let answers: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                Ok(WriteOutcome::Appended(a)) => format!("{} {}", a.message.seq.0, a.duplicate),
                Err(error) => format!("{error:?}"),
                Ok(other) => format!("{other:?}"),
            })
            .collect();
        let side_last = *seqs(&store, side).await.last().unwrap();
        assert_eq!(
            answers,
            vec![
                format!("{} false", earlier.0 + 1),
                "NotMember".to_owned(),
                format!("{} true", earlier.0),
                format!("{side_last} false"),
            ]
        );
        // Committed: the read pool sees them, and only the new ones were published.
        assert_eq!(*seqs(&store, general).await.last().unwrap(), earlier.0 + 1);
        assert_eq!(
            *published.lock().unwrap(),
            vec![(general, Seq(earlier.0 + 1)), (side, Seq(side_last))]
        );
        // No transaction left open: the next write of another kind goes through.
        let joined = store
            .write(WriteOp::Join {
                room: side,
                user: bob.clone(),
            })
            .await;
        assert!(
            matches!(joined, Ok(WriteOutcome::Membership { changed: true, .. })),
            "{joined:?}"
        );
        assert!(matches!(
            store.write(text(side, &bob, "b2")).await,
            Ok(WriteOutcome::Appended(_))
        ));
    }

    /// With the SQLite text thread, a batch's leading run of new texts is a transaction of
    /// its own and search indexing moves last; without it the batch stays whole.
    #[test]
    fn a_batch_splits_into_its_text_run_and_the_rest() {
        let alice = UserRef {
            id: UserId(1),
            name: "alice".into(),
        };
        let job = |op: WriteOp| Job {
            op,
            reply: oneshot::channel().0,
        };
        let join = || WriteOp::Join {
            room: RoomId(1),
            user: alice.clone(),
        };
        let batch = |ops: Vec<WriteOp>| ops.into_iter().map(job).collect::<Vec<Job>>();
        let shape = |transactions: Vec<Vec<Job>>| -> Vec<Vec<&'static str>> {
            transactions
                .iter()
                .map(|jobs| {
                    jobs.iter()
                        .map(|j| match &j.op {
                            WriteOp::AppendText { .. } => "text",
                            WriteOp::IndexForSearch => "index",
                            WriteOp::Join { .. } => "join",
                            _ => "other",
                        })
                        .collect()
                })
                .collect()
        };
        let texts_then_index = || {
            batch(vec![
                text(RoomId(1), &alice, "a"),
                WriteOp::IndexForSearch,
                text(RoomId(1), &alice, "b"),
            ])
        };
        assert_eq!(
            shape(transactions(texts_then_index(), true)),
            [vec!["text", "text"], vec!["index"]]
        );
        assert_eq!(
            shape(transactions(
                batch(vec![
                    text(RoomId(1), &alice, "a"),
                    join(),
                    text(RoomId(1), &alice, "b")
                ]),
                true
            )),
            [vec!["text"], vec!["join", "text"]]
        );
        assert_eq!(
            shape(transactions(
                batch(vec![join(), text(RoomId(1), &alice, "a")]),
                true
            )),
            [vec!["join", "text"]]
        );
        assert_eq!(
            shape(transactions(texts_then_index(), false)),
            [vec!["text", "index", "text"]]
        );
    }

    /// Texts, an index chunk and a join queued together: each gets its answer, the texts
    /// take contiguous seqs, and the chunk indexes the texts committed before it.
    #[tokio::test]
    async fn texts_queued_with_indexing_and_a_join_are_all_answered() {
        let Fixture {
            _dir,
            store,
            published,
            alice,
            bob,
            general,
            side,
        } = fixture().await;
        let before = store.room_head(general).await.unwrap().1;
        let ops = [
            text(general, &alice, "a1"),
            WriteOp::IndexForSearch,
            text(general, &bob, "b1"),
            WriteOp::Join {
                room: side,
                user: bob.clone(),
            },
            text(side, &bob, "b2"),
        ];
        let outcomes = futures::future::join_all(ops.into_iter().map(|op| store.write(op))).await;
        let message = |outcome: &StoreResult<WriteOutcome>| match outcome {
            Ok(WriteOutcome::Appended(a)) => a.message.clone(),
            other => panic!("expected an append, got {other:?}"),
        };
        let (a1, b1, b2) = (
            message(&outcomes[0]),
            message(&outcomes[2]),
            message(&outcomes[4]),
        );
        assert_eq!((a1.room, a1.seq.0), (general, before.0 + 1));
        assert_eq!((b1.room, b1.seq.0), (general, before.0 + 2));
        assert!(
            matches!(outcomes[3], Ok(WriteOutcome::Membership { changed: true, .. })),
            "{:?}",
            outcomes[3]
        );
        assert_eq!(b2.room, side);
        let Ok(WriteOutcome::Indexed { upto }) = &outcomes[1] else {
            panic!("expected indexing, got {:?}", outcomes[1]);
        };
        assert!(*upto >= b1.id.0, "indexed up to {upto}, texts up to {}", b1.id.0);
        let general_published: Vec<i64> = published
            .lock()
            .unwrap()
            .iter()
            .filter(|(room, _)| *room == general)
            .map(|(_, seq)| seq.0)
            .collect();
        assert_eq!(general_published, [before.0 + 1, before.0 + 2]);
    }

    /// The configured durability reaches every connection, the writer's and the readers'.
    #[tokio::test]
    async fn the_sqlite_text_thread_commits_runs_and_survives_a_bad_one() {
        let Fixture {
            _dir,
            store,
            alice,
            bob,
            general,
            side,
            ..
        } = fixture().await;
        let texts = TextCommits::start(&_dir.path().join("huddle.db"), SqliteSync::Full).unwrap();
        let error = texts.append("[1, 2".into(), now_ms()).await.unwrap_err();
        assert!(matches!(error, sqlx::Error::Protocol(_)), "{error:?}");
        let before = seqs(&store, general).await.last().copied().unwrap_or(0);
        let run = [
            text(general, &alice, "t1"),
            text(side, &bob, "not a member"),
            text(general, &bob, "t2"),
        ];
        let run: Vec<&WriteOp> = run.iter().collect();
        let stored = texts.append(run_json(&run), now_ms()).await.unwrap();
        let stored_seqs: Vec<i64> = stored.iter().map(|row| row.1).collect();
        assert_eq!(stored_seqs, vec![before + 1, before + 2]);
        // Committed (the store's own connections see it), and nothing else left open: the
        // store's writer can take the write lock.
        assert_eq!(seqs(&store, general).await.last().copied(), Some(before + 2));
        assert!(matches!(
            store.write(text(general, &alice, "t3")).await,
            Ok(WriteOutcome::Appended(a)) if a.message.seq.0 == before + 3
        ));
    }

    #[tokio::test]
    async fn the_sqlite_settings_reach_every_connection() {
        const PRAGMAS: [&str; 3] = ["synchronous", "temp_store", "wal_autocheckpoint"];
        // synchronous as asked; temp_store 2 = MEMORY; pages between checkpoints: 10,000
        // with FULL, 1,000 with NORMAL (its checkpoint syncs all the WAL since the last).
        for (sync, expected) in [
            (SqliteSync::Full, [2, 2, 10_000]),
            (SqliteSync::Normal, [1, 2, 1_000]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let url = crate::server::store::default_database_url(dir.path());
            let store = Store::open(&url, sync, Arc::new(|_: &ChatMessage| {}))
                .await
                .unwrap();
            user(&store, "ada").await; // the writer has connected
            let mut read = Vec::new();
            for pragma in PRAGMAS {
                let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                    .fetch_one(&store.reads)
                    .await
                    .unwrap();
                read.push(value);
            }
            assert_eq!(read, expected, "{sync:?} on a reader");
            let mut writer = WriteConnection {
                conn: None,
                options: std::str::FromStr::from_str(&url).unwrap(),
                backend: Backend::Sqlite,
                sync,
                texts: Some(TextCommits::start(&dir.path().join("huddle.db"), sync).unwrap()),
            };
            let conn = writer.get().await.unwrap();
            let mut written = Vec::new();
            for pragma in PRAGMAS {
                let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                written.push(value);
            }
            assert_eq!(written, expected, "{sync:?} on the writer");
            let on_thread: Vec<i64> = writer
                .texts
                .as_ref()
                .unwrap()
                .on_thread(|c| {
                    PRAGMAS
                        .iter()
                        .map(|pragma| c.query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0)))
                        .collect::<rusqlite::Result<Vec<i64>>>()
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(on_thread, expected, "{sync:?} on the text thread");
        }
    }

    /// Search indexing runs in batches after the sends, yet a search finds a message sent
    /// just before it; edits and deletes of messages not yet indexed leave the index right.
    #[tokio::test]
    async fn search_sees_every_message_though_indexing_is_deferred() {
        let Fixture {
            _dir,
            store,
            alice,
            general,
            ..
        } = fixture().await;
        let find = |text: &str| {
            let query = crate::server::store::search::SearchQuery {
                text: text.into(),
                ..Default::default()
            };
            let store = store.clone();
            let user = alice.id;
            async move {
                let (hits, _) = store.search(user, &query).await.unwrap();
                hits.into_iter().map(|h| h.text).collect::<Vec<_>>()
            }
        };
        let indexed_count = || async {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'zebra'")
                    .fetch_one(&store.reads)
                    .await
                    .unwrap();
            count
        };

        let zebra = seq_of(
            store
                .write(WriteOp::AppendText {
                    room: general,
                    author: alice.clone(),
                    client_msg_id: ClientMsgId("z2".into()),
                    body: "a zebra crossing".into(),
                    attachments: Vec::new(),
                })
                .await
                .unwrap(),
        );
        assert_eq!(indexed_count().await, 0, "sending does not index");
        assert_eq!(find("zebra").await, vec!["a zebra crossing"]);

        // Edited and deleted before being indexed.
        let before = seq_of(store.write(text(general, &alice, "z3")).await.unwrap());
        store
            .write(WriteOp::Edit {
                room: general,
                seq: before,
                editor: alice.clone(),
                text: "an okapi now".into(),
            })
            .await
            .unwrap();
        let gone = seq_of(store.write(text(general, &alice, "z4")).await.unwrap());
        store
            .write(WriteOp::Delete {
                room: general,
                seq: gone,
                actor: alice.clone(),
                admin: false,
            })
            .await
            .unwrap();
        // Edited after being indexed.
        store
            .write(WriteOp::Edit {
                room: general,
                seq: zebra,
                editor: alice.clone(),
                text: "a giraffe crossing".into(),
            })
            .await
            .unwrap();
        assert_eq!(find("okapi").await, vec!["an okapi now"]);
        assert!(find("z3").await.is_empty() && find("z4").await.is_empty());
        assert_eq!(find("giraffe").await, vec!["a giraffe crossing"]);
        assert!(find("zebra").await.is_empty());
        sqlx::query("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
            .execute(&store.reads)
            .await
            .expect("the index matches the messages");
    }

    /// The SQLite thread commits a batch's new texts; the retries left out of it are
    /// answered by the general path afterwards. When that second transaction fails, the
    /// committed messages are still answered as stored and published live: only the
    /// retry gets the error. (The fault: the general path's connection is on a database
    /// another connection holds locked, and it will not wait.)
    #[tokio::test]
    async fn a_failure_after_the_text_thread_committed_keeps_what_it_committed() {
        let Fixture {
            _dir,
            store,
            published,
            alice,
            general,
            ..
        } = fixture().await;
        let earlier = seq_of(store.write(text(general, &alice, "early")).await.unwrap());
        published.lock().unwrap().clear();

        let locked = _dir.path().join("locked.db");
        let holder = rusqlite::Connection::open(&locked).unwrap();
        holder
            .execute_batch("CREATE TABLE t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let url = format!("sqlite://{}", locked.display());
        let mut general_path: AnyConnection = {
            use sqlx::{ConnectOptions, Executor};
            let options: sqlx::any::AnyConnectOptions = std::str::FromStr::from_str(&url).unwrap();
            let mut conn = options.connect().await.unwrap();
            conn.execute("PRAGMA busy_timeout = 0").await.unwrap();
            conn
        };
        sqlx::query("SELECT 1").execute(&mut general_path).await.unwrap();
        let mut writer = WriteConnection {
            conn: Some(general_path),
            options: std::str::FromStr::from_str(&url).unwrap(),
            backend: Backend::Sqlite,
            sync: SqliteSync::Full,
            texts: Some(TextCommits::start(&_dir.path().join("huddle.db"), SqliteSync::Full).unwrap()),
        };
        let sink = published.clone();
        let on_commit: OnCommit = Arc::new(move |m: &ChatMessage| sink.lock().unwrap().push((m.room, m.seq)));
        let (jobs, answers): (Vec<Job>, Vec<_>) =
            [text(general, &alice, "fresh"), text(general, &alice, "early")]
                .into_iter()
                .map(|op| {
                    let (reply, answer) = oneshot::channel();
                    (Job { op, reply }, answer)
                })
                .unzip();
        run_batch(&mut writer, &on_commit, jobs).await;
        let answers: Vec<_> = futures::future::join_all(answers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();

        assert!(
            matches!(&answers[0], Ok(WriteOutcome::Appended(a)) if a.message.seq.0 == earlier.0 + 1 && !a.duplicate),
            "the committed message is answered as stored: {:?}",
            answers[0]
        );
        assert!(matches!(answers[1], Err(StoreError::Db(_))), "{:?}", answers[1]);
        assert_eq!(*published.lock().unwrap(), vec![(general, Seq(earlier.0 + 1))]);
        assert_eq!(seqs(&store, general).await.last().copied(), Some(earlier.0 + 1));
    }
}
