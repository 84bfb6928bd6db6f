//! Guest identity: a person picks a display name, the server creates a user and hands the
//! browser a random secret in an HttpOnly cookie; the database keeps only the secret's hash.
//! The same browser is the same user across reloads and reconnects.

use super::AppState;
use crate::protocol::{rules, ErrorCode, UserRef};
use crate::server::store::{Store, StoreError, WriteOp, WriteOutcome};
use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const GUEST_COOKIE: &str = "huddle_guest";
/// The cookie lasts a year; the user record stays as long as the data folder does.
const COOKIE_MAX_AGE_S: u32 = 365 * 24 * 3600;

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    hex::encode(bytes)
}

/// The signed-in user named by the request's guest cookie, if any.
pub async fn user_from_headers(store: &Store, headers: &HeaderMap) -> Option<UserRef> {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let secret = cookies
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == GUEST_COOKIE)
        .map(|(_, value)| value.to_owned())?;
    match store.user_by_secret_hash(&hash_secret(&secret)).await {
        Ok(user) => user,
        Err(error) => {
            tracing::error!(%error, "looking up guest cookie failed");
            None
        }
    }
}

#[derive(Deserialize)]
pub struct GuestRequest {
    pub name: String,
}

/// JSON error body shared by the HTTP API: the same codes as the WebSocket protocol.
pub fn api_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": code, "message": message.into() })),
    )
        .into_response()
}

/// A JSON request body whose rejection (bad JSON, wrong types, wrong content type) is the
/// API's usual `{code: "bad_request", message}` with 400, not axum's plain-text answer.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(api_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("The request body is not what this call expects: {}", rejection.body_text()),
            )),
        }
    }
}

/// `POST /api/guest {"name": "..."}`: creates a guest user and sets the cookie.
pub async fn create_guest(State(state): State<AppState>, ApiJson(request): ApiJson<GuestRequest>) -> Response {
    let name = match rules::display_name(&request.name) {
        Ok(name) => name,
        Err(invalid) => return api_error(StatusCode::BAD_REQUEST, invalid.code, invalid.message),
    };
    let secret = new_secret();
    let op = WriteOp::CreateGuest {
        name,
        secret_hash: hash_secret(&secret),
    };
    let user = match state.chat.store.write(op).await {
        Ok(WriteOutcome::User(user)) => user,
        Err(StoreError::NameTaken) => {
            return api_error(
                StatusCode::CONFLICT,
                ErrorCode::NameTaken,
                "That name is taken; please pick another.",
            )
        }
        Ok(other) => unreachable!("guest creation answers with User, not {other:?}"),
        Err(error) => {
            tracing::error!(%error, "creating guest failed");
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "Could not create the user; please retry.",
            );
        }
    };
    let cookie =
        format!("{GUEST_COOKIE}={secret}; HttpOnly; SameSite=Lax; Path=/; Max-Age={COOKIE_MAX_AGE_S}");
    (StatusCode::CREATED, [(header::SET_COOKIE, cookie)], Json(user)).into_response()
}
