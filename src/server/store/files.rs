//! Upload records: adding one (writer), attaching a sender's files to their message
//! (writer, same transaction as the message), and the access check for fetching one.

use super::{Store, StoreError, StoreResult};
use crate::protocol::{Attachment, ChatMessage, RoomId, UserId};
use sqlx::{AnyConnection, Row};

/// An upload whose bytes are stored; recorded by [`super::WriteOp::AddFile`].
#[derive(Debug, Clone)]
pub struct NewFile {
    pub id: String,
    pub sha256: String,
    pub room: RoomId,
    pub uploader: UserId,
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub dimensions: Option<(u32, u32)>,
    pub thumb_sha256: Option<String>,
}

/// What serving a file needs.
#[derive(Debug, Clone)]
pub struct FileRecord {
    pub sha256: String,
    pub thumb_sha256: Option<String>,
    pub name: String,
    pub mime: String,
    pub size: u64,
}

pub(super) async fn insert(conn: &mut AnyConnection, file: &NewFile) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO files (id, sha256, room_id, uploader_id, name, mime, size, width, height,
                            thumb_sha256, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&file.id)
    .bind(&file.sha256)
    .bind(file.room.0)
    .bind(file.uploader.0)
    .bind(&file.name)
    .bind(&file.mime)
    .bind(file.size as i64)
    .bind(file.dimensions.map(|(w, _)| i64::from(w)))
    .bind(file.dimensions.map(|(_, h)| i64::from(h)))
    .bind(file.thumb_sha256.as_deref())
    .bind(super::now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Attaches the author's unsent uploads `ids` in the message's room to it and records them
/// on the message; `NoSuchFile` (and nothing attached) if any is not such an upload.
pub(super) async fn attach(
    conn: &mut AnyConnection,
    message: &ChatMessage,
    ids: &[String],
) -> StoreResult<Vec<Attachment>> {
    let mut attachments = Vec::with_capacity(ids.len());
    for id in ids {
        let row = sqlx::query(
            "UPDATE files SET message_id = $1
             WHERE id = $2 AND room_id = $3 AND uploader_id = $4 AND message_id IS NULL
             RETURNING id, name, size, mime, width, height, thumb_sha256",
        )
        .bind(message.id.0)
        .bind(id)
        .bind(message.room.0)
        .bind(message.author.id.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NoSuchFile)?;
        attachments.push(Attachment {
            id: row.get("id"),
            name: row.get("name"),
            size: row.get::<i64, _>("size") as u64,
            mime: row.get("mime"),
            width: row.get::<Option<i64>, _>("width").map(|w| w as u32),
            height: row.get::<Option<i64>, _>("height").map(|h| h as u32),
            thumb: row.get::<Option<String>, _>("thumb_sha256").is_some(),
        });
    }
    sqlx::query("UPDATE messages SET attachments = $1 WHERE id = $2")
        .bind(serde_json::to_string(&attachments).expect("attachments serialize"))
        .bind(message.id.0)
        .execute(&mut *conn)
        .await?;
    Ok(attachments)
}

impl Store {
    /// A file `user` may fetch: in a room they are a member of, and either sent with a
    /// message that is not deleted, or their own upload not sent yet.
    pub async fn file_for(&self, user: UserId, id: &str) -> StoreResult<Option<FileRecord>> {
        let row = sqlx::query(
            "SELECT f.sha256, f.thumb_sha256, f.name, f.mime, f.size FROM files f
             JOIN memberships ms ON ms.room_id = f.room_id AND ms.user_id = $1
             LEFT JOIN messages m ON m.id = f.message_id
             WHERE f.id = $2
               AND ((f.message_id IS NOT NULL AND m.deleted_at IS NULL)
                    OR (f.message_id IS NULL AND f.uploader_id = $1))",
        )
        .bind(user.0)
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|row| FileRecord {
            sha256: row.get("sha256"),
            thumb_sha256: row.get("thumb_sha256"),
            name: row.get("name"),
            mime: row.get("mime"),
            size: row.get::<i64, _>("size") as u64,
        }))
    }
}
