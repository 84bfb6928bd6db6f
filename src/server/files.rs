//! File uploads and downloads over HTTP. `POST /api/rooms/{room}/files?name=…` streams the
//! body to disk while hashing it (never holding it whole in memory), refuses it past
//! `max_upload_bytes`, decides its type from its bytes (an allow-list; the client's name and
//! headers count for nothing), checks images within decode limits and makes a preview, and
//! stores the bytes once per SHA-256 in the files folder. `GET /files/{id}` (and `/thumb`)
//! serves a file to members of its room with headers that never let it run as a page.

use crate::protocol::{Attachment, ErrorCode, RoomId};
use crate::server::auth::{api_error, authenticate};
use crate::server::store::{NewFile, WriteOp};
use crate::server::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path as FsPath, PathBuf};
use tokio::io::AsyncWriteExt;

/// Bytes kept from the start of an upload to decide its type.
const SNIFF_BYTES: usize = 8192;
/// Images larger than this many pixels are refused before decoding.
const MAX_IMAGE_PIXELS: u64 = 40_000_000;
/// Widest or tallest image accepted.
const MAX_IMAGE_SIDE: u32 = 16_384;
/// Memory an image decode may use.
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// Previews fit in this square.
const THUMB_SIDE: u32 = 360;

/// Types accepted, found by their leading bytes.
const ALLOWED: [&str; 6] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "application/zip",
];

#[derive(serde::Deserialize)]
pub struct UploadQuery {
    #[serde(default)]
    name: String,
}

/// Where a blob with this SHA-256 lives: `<files_dir>/ab/abcdef…`.
fn blob_path(dir: &FsPath, sha256: &str) -> PathBuf {
    dir.join(&sha256[..2]).join(sha256)
}

/// The type of an upload from its first bytes, if allowed: the binary formats above, or
/// plain text (valid UTF-8 without NUL bytes), which is how HTML or SVG is ever served.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if let Some(kind) = infer::get(head) {
        // Markup and scripts are recognised as text kinds: they may only ever be plain text.
        if kind.matcher_type() != infer::MatcherType::Text {
            return ALLOWED
                .iter()
                .find(|allowed| **allowed == kind.mime_type())
                .copied();
        }
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // The sample may end inside a character.
        Err(error) => error.error_len().is_none() && head.len() == SNIFF_BYTES,
    };
    (text && !head.is_empty() && !head.contains(&0)).then_some("text/plain")
}

/// A file name as shown and sent back: its last path part, without control characters,
/// at most 200 characters; "file" when nothing is left.
fn clean_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let name: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    let name = name.trim().to_owned();
    if name.is_empty() {
        "file".to_owned()
    } else {
        name
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    hex::encode(bytes)
}

/// `POST /api/rooms/{room}/files?name=…`: the body is the file.
pub async fn upload(
    State(state): State<AppState>,
    Path(room): Path<i64>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(signed_in) = authenticate(&state, &headers).await else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::NotSignedIn,
            "Sign in to upload files.",
        );
    };
    let room = RoomId(room);
    let user = signed_in.user;
    if !state.chat.store.is_member(room, user.id).await.unwrap_or(false) {
        return api_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NoSuchRoom,
            "There is no such room.",
        );
    }
    let max = state.config.max_upload_bytes as u64;
    // Refuse at once what announces itself as too big.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max) {
        return too_large(max);
    }
    let dir = state.config.files_dir();
    let received = match receive(&dir, body, max).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    let Some(mime) = sniff(&received.head) else {
        let _ = tokio::fs::remove_file(&received.temp).await;
        return api_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedType,
            "Only images (PNG, JPEG, GIF, WebP), PDF, ZIP and plain text files can be sent.",
        );
    };
    let image = if mime.starts_with("image/") {
        let temp = received.temp.clone();
        match tokio::task::spawn_blocking(move || inspect_image(&temp)).await {
            Ok(Ok(image)) => Some(image),
            _ => {
                let _ = tokio::fs::remove_file(&received.temp).await;
                return api_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::BadImage,
                    "That image cannot be read, or is too large to show (at most 40 megapixels).",
                );
            }
        }
    } else {
        None
    };
    let stored = async {
        let thumb_sha256 = match &image {
            Some(image) => Some(store_blob_bytes(&dir, &image.thumb_png).await?),
            None => None,
        };
        store_blob_file(&dir, &received.temp, &received.sha256).await?;
        Ok::<_, std::io::Error>(thumb_sha256)
    }
    .await;
    let thumb_sha256 = match stored {
        Ok(thumb) => thumb,
        Err(error) => {
            tracing::error!(%error, "could not store an upload");
            let _ = tokio::fs::remove_file(&received.temp).await;
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "The file could not be stored; please retry.",
            );
        }
    };
    let file = NewFile {
        id: random_id(),
        sha256: received.sha256,
        room,
        uploader: user.id,
        name: clean_name(&query.name),
        mime: mime.to_owned(),
        size: received.size,
        dimensions: image.as_ref().map(|i| (i.width, i.height)),
        thumb_sha256,
    };
    let attachment = Attachment {
        id: file.id.clone(),
        name: file.name.clone(),
        size: file.size,
        mime: file.mime.clone(),
        width: file.dimensions.map(|(w, _)| w),
        height: file.dimensions.map(|(_, h)| h),
        thumb: file.thumb_sha256.is_some(),
    };
    match state.chat.store.write(WriteOp::AddFile(file)).await {
        Ok(_) => (StatusCode::CREATED, Json(attachment)).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not record an upload");
            api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "The file could not be recorded; please retry.",
            )
        }
    }
}

fn too_large(max: u64) -> Response {
    api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        format!("Files may be at most {:.1} MiB.", max as f64 / 1_048_576.0),
    )
}

/// An upload on disk under a temporary name.
struct Received {
    temp: PathBuf,
    sha256: String,
    size: u64,
    head: Vec<u8>,
}

/// Streams `body` into a temporary file in `dir`, hashing as it goes.
async fn receive(dir: &FsPath, body: Body, max: u64) -> Result<Received, Response> {
    let internal = |error: std::io::Error| {
        tracing::error!(%error, "upload could not be written");
        api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "The file could not be stored; please retry.",
        )
    };
    let temp_dir = dir.join("tmp");
    tokio::fs::create_dir_all(&temp_dir).await.map_err(internal)?;
    let temp = temp_dir.join(random_id());
    let mut file = tokio::fs::File::create(&temp).await.map_err(internal)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    let outcome: Result<(), Response> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                api_error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    "The upload was interrupted.",
                )
            })?;
            size += chunk.len() as u64;
            if size > max {
                return Err(too_large(max));
            }
            if head.len() < SNIFF_BYTES {
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(internal)?;
        }
        file.flush().await.map_err(internal)?;
        if size == 0 {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::Empty,
                "The file is empty.",
            ));
        }
        Ok(())
    }
    .await;
    if let Err(response) = outcome {
        drop(file);
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(response);
    }
    Ok(Received {
        temp,
        sha256: hex::encode(hasher.finalize()),
        size,
        head,
    })
}

/// An image's size and preview.
struct InspectedImage {
    width: u32,
    height: u32,
    thumb_png: Vec<u8>,
}

/// Reads the dimensions first and refuses huge ones before decoding anything (a small file
/// can claim a gigantic image); decodes within a memory limit; makes the preview.
fn inspect_image(path: &FsPath) -> Result<InspectedImage, image::ImageError> {
    let reader = || -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>, image::ImageError> {
        let mut reader = image::ImageReader::open(path)?.with_guessed_format()?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        Ok(reader)
    };
    let (width, height) = reader()?.into_dimensions()?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(image::ImageError::Limits(image::error::LimitError::from_kind(
            image::error::LimitErrorKind::DimensionError,
        )));
    }
    let picture = reader()?.decode()?;
    let thumb = picture.thumbnail(THUMB_SIDE, THUMB_SIDE);
    let mut thumb_png = Vec::new();
    thumb.write_to(&mut std::io::Cursor::new(&mut thumb_png), image::ImageFormat::Png)?;
    Ok(InspectedImage {
        width,
        height,
        thumb_png,
    })
}

/// Moves the upload to its content address; when those bytes are there already, they are
/// kept once and the upload is dropped.
async fn store_blob_file(dir: &FsPath, temp: &FsPath, sha256: &str) -> std::io::Result<()> {
    let path = blob_path(dir, sha256);
    if tokio::fs::try_exists(&path).await? {
        return tokio::fs::remove_file(temp).await;
    }
    tokio::fs::create_dir_all(path.parent().expect("blob paths have a folder")).await?;
    tokio::fs::rename(temp, &path).await
}

/// Stores generated bytes (a preview) by content; returns their SHA-256.
async fn store_blob_bytes(dir: &FsPath, bytes: &[u8]) -> std::io::Result<String> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let path = blob_path(dir, &sha256);
    if !tokio::fs::try_exists(&path).await? {
        tokio::fs::create_dir_all(path.parent().expect("blob paths have a folder")).await?;
        let temp = dir.join("tmp").join(random_id());
        tokio::fs::create_dir_all(temp.parent().expect("temp has a folder")).await?;
        tokio::fs::write(&temp, bytes).await?;
        tokio::fs::rename(&temp, &path).await?;
    }
    Ok(sha256)
}

/// `GET /files/{id}`.
pub async fn download(state: State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    serve(state, id, headers, false).await
}

/// `GET /files/{id}/thumb`.
pub async fn thumbnail(state: State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    serve(state, id, headers, true).await
}

async fn serve(State(state): State<AppState>, id: String, headers: HeaderMap, thumb: bool) -> Response {
    let not_found = || {
        api_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NoSuchFile,
            "There is no such file.",
        )
    };
    let Some(signed_in) = authenticate(&state, &headers).await else {
        return not_found();
    };
    let Ok(Some(file)) = state.chat.store.file_for(signed_in.user.id, &id).await else {
        return not_found();
    };
    let (sha256, mime) = match (thumb, &file.thumb_sha256) {
        (false, _) => (file.sha256.clone(), file.mime.clone()),
        (true, Some(thumb)) => (thumb.clone(), "image/png".to_owned()),
        (true, None) => return not_found(),
    };
    let path = blob_path(&state.config.files_dir(), &sha256);
    let Ok(opened) = tokio::fs::File::open(&path).await else {
        tracing::error!(path = %path.display(), "a recorded file is missing from the files folder");
        return not_found();
    };
    let length = opened.metadata().await.map(|m| m.len()).unwrap_or(file.size);
    let content_type = if mime == "text/plain" {
        "text/plain; charset=utf-8".to_owned()
    } else {
        mime.clone()
    };
    // Images show in the page; everything else downloads. Nothing is ever rendered as HTML.
    let disposition = if mime.starts_with("image/") {
        "inline"
    } else {
        "attachment"
    };
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(opened)).into_response();
    let response_headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, content_type);
    set(header::CONTENT_LENGTH, length.to_string());
    set(
        header::CONTENT_DISPOSITION,
        content_disposition(disposition, &file.name),
    );
    // Content-addressed and per-user: cache privately, for good.
    set(
        header::CACHE_CONTROL,
        "private, max-age=31536000, immutable".to_owned(),
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned());
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox".to_owned(),
    );
    response
}

/// `inline` or `attachment` with the name as ASCII and as UTF-8 (RFC 6266 / 5987).
fn content_disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(
            sniff("<html><script>alert(1)</script>".as_bytes()),
            Some("text/plain")
        );
        assert_eq!(
            sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            Some("text/plain")
        );
        assert_eq!(sniff(b"MZ\x90\0\x03\0\0\0"), None, "a Windows program");
        assert_eq!(sniff(b"plain\0binary"), None);
    }

    /// A body of `chunks` pieces of `size` bytes, with no length known in advance.
    fn streamed(chunks: usize, size: usize) -> Body {
        let pieces = (0..chunks).map(move |_| Ok::<_, std::io::Error>(vec![b'a'; size]));
        Body::from_stream(futures::stream::iter(pieces))
    }

    #[tokio::test]
    async fn a_streamed_body_is_counted_and_cut_off_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let refused = receive(dir.path(), streamed(40, 10_000), 200_000)
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = axum::body::to_bytes(refused.into_body(), 10_000).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("too_large"));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "the partial file is removed"
        );

        let kept = receive(dir.path(), streamed(20, 10_000), 200_000)
            .await
            .unwrap_or_else(|_| panic!("accepted"));
        assert_eq!(kept.size, 200_000);
        assert_eq!(kept.head.len(), SNIFF_BYTES);
        assert_eq!(kept.sha256, hex::encode(Sha256::digest(vec![b'a'; 200_000])));
        assert_eq!(std::fs::metadata(&kept.temp).unwrap().len(), 200_000);
    }

    #[test]
    fn names_are_cleaned_and_headers_safe() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\\\x\\\\report.pdf"), "report.pdf");
        assert_eq!(clean_name("  \u{7}  "), "file");
        assert_eq!(
            content_disposition("attachment", "résumé \"final\".pdf"),
            "attachment; filename=\"r_sum_ _final_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf"
        );
    }
}
