//! SQLite's hot write path: a batch of new text messages committed by a thread of its own,
//! with one hand-off to that thread and one answer back. (sqlx drives SQLite from a worker
//! thread too, but answers each statement and each row separately, and every answer wakes
//! the runtime: at chat rates those wake-ups cost more than the insert.)

use super::{Backend, SqliteSync};
use std::path::Path;
use tokio::sync::oneshot;

/// A message the append statement stored: `(id, seq, author id, client message id)`.
pub(super) type StoredRow = (i64, i64, i64, String);

/// Work for the thread: it runs on the thread's connection and sends its own answer.
type Task = Box<dyn FnOnce(&rusqlite::Connection) + Send>;

/// The thread's mailbox. The thread ends when this is dropped.
pub(super) struct TextCommits {
    tasks: std::sync::mpsc::Sender<Task>,
}

impl TextCommits {
    /// Opens a second write connection to the database file at `path` (its schema already
    /// migrated) with the same settings as sqlx's, and starts the thread that owns it. The
    /// store's writer task is the only one that calls it, between its own transactions, so
    /// the two write connections never wait for each other.
    pub(super) fn start(path: &Path, sync: SqliteSync) -> std::io::Result<TextCommits> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = rusqlite::Connection::open_with_flags(path, flags)
            .and_then(|connection| {
                connection.execute_batch(Backend::Sqlite.session_setup(sync))?;
                // It writes every text message: 16 MiB of page cache (SQLite's default is
                // 2 MiB) keeps the index pages many concurrent authors touch out of `pread`.
                connection.execute_batch("PRAGMA cache_size = -16384")?;
                Ok(connection)
            })
            .map_err(std::io::Error::other)?;
        let (tasks, incoming) = std::sync::mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("sqlite-texts".into())
            .spawn(move || {
                for task in incoming {
                    task(&connection);
                }
            })?;
        Ok(TextCommits { tasks })
    }

    /// Stores a run of new text messages (`run` as [`Backend::append_texts`] takes it) in a
    /// transaction of its own, committed (and synced as `sqlite_synchronous` says) before
    /// this returns.
    pub(super) async fn append(&self, run: String, ts: i64) -> sqlx::Result<Vec<StoredRow>> {
        let stored = self
            .on_thread(move |connection| commit(connection, &run, ts))
            .await?;
        stored.map_err(into_sqlx)
    }

    /// Runs `work` on the thread's connection and answers with its result.
    pub(super) async fn on_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> T + Send + 'static,
    ) -> sqlx::Result<T> {
        let (reply, answer) = oneshot::channel();
        let task: Task = Box::new(move |connection| {
            let _ = reply.send(work(connection));
        });
        self.tasks.send(task).map_err(|_| sqlx::Error::WorkerCrashed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)
    }
}

fn commit(connection: &rusqlite::Connection, run: &str, ts: i64) -> rusqlite::Result<Vec<StoredRow>> {
    // Every statement comes from the connection's cache: `execute_batch` would parse
    // BEGIN and COMMIT again for each batch.
    let stored = connection
        .prepare_cached(Backend::Sqlite.begin_write())
        .and_then(|mut begin| {
            begin.execute([])?;
            let mut statement = connection.prepare_cached(Backend::Sqlite.append_texts())?;
            let rows = statement
                .query_map(rusqlite::params![run, ts], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect::<rusqlite::Result<Vec<StoredRow>>>()?;
            connection.prepare_cached("COMMIT")?.execute([])?;
            Ok(rows)
        });
    if stored.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    stored
}

/// Failures of the disk or the lock are the database being unavailable (the callers may
/// retry); anything else is a bug reported as such.
fn into_sqlx(error: rusqlite::Error) -> sqlx::Error {
    use rusqlite::ErrorCode::*;
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen | ReadOnly) => {
            sqlx::Error::Io(std::io::Error::other(error))
        }
        _ => sqlx::Error::Protocol(format!("sqlite: {error}")),
    }
}
