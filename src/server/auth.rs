//! Accounts and sessions: register, log in, log out, guests; argon2id password hashes; signed
//! session tokens (JWT naming a session row) in an HttpOnly cookie or a Bearer header; log-in
//! throttling per IP and per username; closing every socket of a session on log-out.

use super::limits::client_ip;
use super::AppState;
use crate::protocol::{rules, ErrorCode, UserId, UserRef};
use crate::server::store::{NewSession, Store, StoreError, WriteOp, WriteOutcome};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::{
    extract::{ConnectInfo, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub const SESSION_COOKIE: &str = "huddle_session";
/// Shortest password accepted at registration.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (argon2 input stays bounded).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// What a session token says. `sid` names the session row, so deleting the row (log-out)
/// revokes the token before `exp`.
#[derive(Serialize, Deserialize)]
struct Claims {
    sub: i64,
    sid: String,
    iat: u64,
    exp: u64,
}

/// A verified session: who, which session, until when (Unix ms).
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub user: UserRef,
    pub session: String,
    pub expires_at: i64,
}

/// Why presented credentials were not accepted (logged, never shown in detail).
#[derive(Debug)]
pub enum AuthFailure {
    BadToken(jsonwebtoken::errors::Error),
    SessionGone,
    Store(StoreError),
}

/// Signing keys, the log-in throttles and the live sockets of each session.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_s: u32,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_name: DefaultKeyedRateLimiter<String>,
    /// A hash of a random password, verified when a name is unknown so a wrong name costs as
    /// much time as a wrong password.
    decoy_hash: String,
    sockets: Mutex<HashMap<String, Vec<CancellationToken>>>,
}

impl Auth {
    pub fn new(secret: &[u8], ttl_s: u32, attempts_per_min: u32) -> Auth {
        let attempts = NonZeroU32::new(attempts_per_min.max(1)).expect("at least 1");
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_s,
            per_ip: RateLimiter::keyed(Quota::per_minute(attempts)),
            per_name: RateLimiter::keyed(Quota::per_minute(attempts)),
            decoy_hash: hash_password(&random_hex(16)),
            sockets: Mutex::default(),
        }
    }

    /// A fresh session (random id, expiry from `session_ttl_s`), not yet stored.
    fn new_session(&self) -> NewSession {
        NewSession {
            id: random_hex(16),
            expires_at: super::store::now_ms() + i64::from(self.ttl_s) * 1000,
        }
    }

    /// The signed token naming a session.
    fn token_for(&self, user: UserId, session: &NewSession) -> String {
        let claims = Claims {
            sub: user.0,
            sid: session.id.clone(),
            iat: (super::store::now_ms() / 1000) as u64,
            exp: (session.expires_at / 1000) as u64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Checks the token's signature and expiry, then that its session still exists.
    pub async fn verify(&self, store: &Store, token: &str) -> Result<Authenticated, AuthFailure> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(AuthFailure::BadToken)?
            .claims;
        match store.session_user(&claims.sid, UserId(claims.sub)).await {
            Ok(Some((user, expires_at))) => Ok(Authenticated {
                user,
                session: claims.sid,
                expires_at,
            }),
            Ok(None) => Err(AuthFailure::SessionGone),
            Err(error) => Err(AuthFailure::Store(error)),
        }
    }

    /// Registers a socket under its session; log-out cancels the token.
    pub fn track_socket(&self, session: &str) -> CancellationToken {
        let token = CancellationToken::new();
        let mut sockets = self.sockets.lock().expect("sockets lock");
        let list = sockets.entry(session.to_owned()).or_default();
        list.retain(|t| !t.is_cancelled());
        list.push(token.clone());
        token
    }

    /// Forgets a closed socket (its token is cancelled by the session loop on exit).
    pub fn untrack_socket(&self, session: &str, token: &CancellationToken) {
        token.cancel();
        let mut sockets = self.sockets.lock().expect("sockets lock");
        if let Some(list) = sockets.get_mut(session) {
            list.retain(|t| !t.is_cancelled());
            if list.is_empty() {
                sockets.remove(session);
            }
        }
    }

    /// Closes every socket of a session.
    fn end_session(&self, session: &str) -> usize {
        let list = self.sockets.lock().expect("sockets lock").remove(session);
        list.map_or(0, |list| {
            list.iter().for_each(CancellationToken::cancel);
            list.len()
        })
    }

    /// One log-in attempt from `ip` for `name`; Err(ms to wait) when throttled.
    fn allow_attempt(&self, ip: IpAddr, name: &str) -> Result<(), u64> {
        use governor::clock::Clock;
        let now = super::limits::clock().now();
        let ip_check = self.per_ip.check_key(&ip);
        let name_check = self.per_name.check_key(&super::store::name_key(name));
        match ip_check.and(name_check) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(now).as_millis().max(1) as u64),
        }
    }

    /// Drops throttle state of quiet keys; call now and then.
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_name.retain_recent();
    }
}

/// The signing secret: from configuration, else the data folder's `jwt_secret` file, created
/// on first start with owner-only permissions (0600).
pub fn load_or_create_secret(configured: &str, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    if !configured.is_empty() {
        return Ok(configured.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.trim().len() >= 32 => return Ok(existing.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is too short; delete it to regenerate",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = random_hex(32);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&path)?, secret.as_bytes())?;
    Ok(secret.into_bytes())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS provides randomness");
    hex::encode(buf)
}

/// argon2id with the library's defaults (19 MiB, 2 passes, 1 lane: OWASP's minimum).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters")
        .to_string()
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The session token a request carries: `Authorization: Bearer`, else the session cookie.
pub fn token_from_headers(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|line| line.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.to_owned())
    })
}

/// The signed-in user of a request, if its token is valid; failures are logged.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Option<Authenticated> {
    check_credentials(state, headers).await.ok().flatten()
}

/// The session behind the request's credentials: `Ok(None)` when there are none or they are
/// refused, `Err` when the store could not be asked (busy or down), which is no reason to
/// treat someone as signed out: the caller says "retry" instead.
pub async fn check_credentials(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, StoreError> {
    let Some(token) = token_from_headers(headers) else {
        return Ok(None);
    };
    match state.auth.verify(&state.chat.store, &token).await {
        Ok(found) => Ok(Some(found)),
        Err(AuthFailure::Store(error)) => {
            tracing::warn!(%error, "session check failed: store unavailable");
            Err(error)
        }
        Err(failure) => {
            tracing::warn!(?failure, "auth failure: session token refused");
            Ok(None)
        }
    }
}

/// JSON error body shared by the HTTP API: the same codes as the WebSocket protocol.
pub fn api_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": code, "message": message.into() })),
    )
        .into_response()
}

fn internal_error(error: StoreError) -> Response {
    tracing::error!(%error, "account store failure");
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "Something went wrong on the server; please retry.",
    )
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
                format!(
                    "The request body is not what this call expects: {}",
                    rejection.body_text()
                ),
            )),
        }
    }
}

/// `Set-Cookie` for a session token; `Secure` when the browser reached us over HTTPS.
fn session_cookie(token: &str, max_age_s: u32, headers: &HeaderMap) -> String {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| o.starts_with("https://"));
    let secure = if https { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_s}{secure}")
}

/// 201/200 with the user and the session cookie (the token is also in the body for
/// non-browser clients, which send it as `Authorization: Bearer`).
fn signed_in(
    status: StatusCode,
    user: UserRef,
    token: String,
    state: &AppState,
    headers: &HeaderMap,
) -> Response {
    let cookie = session_cookie(&token, state.config.session_ttl_s, headers);
    let body = serde_json::json!({ "id": user.id, "name": user.name, "token": token });
    (status, [(header::SET_COOKIE, cookie)], Json(body)).into_response()
}

#[derive(Deserialize)]
pub struct GuestRequest {
    pub name: String,
}

/// `POST /api/guest {"name"}`: a guest user (no password) and its session.
pub async fn create_guest(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<GuestRequest>,
) -> Response {
    if !state.config.allow_guests {
        return api_error(
            StatusCode::FORBIDDEN,
            ErrorCode::GuestsDisabled,
            "This server does not allow guests; please register or log in.",
        );
    }
    create_user(&state, &headers, &request.name, None).await
}

#[derive(Deserialize)]
pub struct Credentials {
    pub name: String,
    pub password: String,
}

/// `POST /api/register {"name", "password"}`: a new account and its session.
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<Credentials>,
) -> Response {
    let chars = request.password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::WeakPassword,
            format!("Passwords need at least {MIN_PASSWORD_CHARS} characters."),
        );
    }
    if chars > MAX_PASSWORD_CHARS {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::TooLong,
            format!("Passwords may have at most {MAX_PASSWORD_CHARS} characters."),
        );
    }
    let password = request.password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .expect("hashing task");
    create_user(&state, &headers, &request.name, Some(hash)).await
}

async fn create_user(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    password_hash: Option<String>,
) -> Response {
    match new_user(state, name, password_hash).await {
        Ok((user, token)) => signed_in(StatusCode::CREATED, user, token, state, headers),
        Err((status, code, message)) => api_error(status, code, message),
    }
}

/// A new user (guest without a password) and a session token for them; a refusal as
/// (HTTP status, code, sentence).
pub async fn new_user(
    state: &AppState,
    name: &str,
    password_hash: Option<String>,
) -> Result<(UserRef, String), (StatusCode, ErrorCode, String)> {
    let name = rules::display_name(name)
        .map_err(|invalid| (StatusCode::BAD_REQUEST, invalid.code, invalid.message))?;
    // The user id is known only after the insert; the token is minted for it right after.
    let session = state.auth.new_session();
    let op = WriteOp::CreateUser {
        name,
        password_hash,
        session: session.clone(),
    };
    let user = match state.chat.store.write(op).await {
        Ok(WriteOutcome::User(user)) => user,
        Err(StoreError::NameTaken) => {
            return Err((
                StatusCode::CONFLICT,
                ErrorCode::NameTaken,
                "That name is taken; please pick another.".into(),
            ))
        }
        Ok(other) => unreachable!("user creation answers with User, not {other:?}"),
        Err(error) => {
            tracing::error!(%error, "account store failure");
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "Something went wrong on the server; please retry.".into(),
            ));
        }
    };
    let token = state.auth.token_for(user.id, &session);
    tracing::info!(user = %user.id, "account created");
    Ok((user, token))
}

/// `POST /api/login {"name", "password"}`: a new session for a registered account. A wrong
/// name and a wrong password get the same answer, after the same work.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<Credentials>,
) -> Response {
    let ip = client_ip(peer, &headers, &state.config.client_ip_header);
    if let Err(wait_ms) = state.auth.allow_attempt(ip, &request.name) {
        tracing::warn!(%ip, "auth failure: log-in throttled");
        let retry_s = wait_ms.div_ceil(1000).to_string();
        let mut response = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "Too many log-in attempts; please wait a minute and try again.",
        );
        if let Ok(value) = retry_s.parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let account = match state.chat.store.account(request.name.trim()).await {
        Ok(account) => account,
        Err(error) => return internal_error(error),
    };
    let decoy = state.auth.decoy_hash.clone();
    let (user, hash) = match account {
        Some((user, hash)) => (Some(user), hash),
        None => (None, decoy),
    };
    let password = request.password;
    let matches = tokio::task::spawn_blocking(move || password_matches(&password, &hash))
        .await
        .expect("verify task");
    let Some(user) = user.filter(|_| matches) else {
        tracing::warn!(%ip, "auth failure: wrong name or password");
        return api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidCredentials,
            "Wrong name or password.",
        );
    };
    let session = state.auth.new_session();
    let token = state.auth.token_for(user.id, &session);
    let op = WriteOp::CreateSession {
        user: user.id,
        session,
    };
    if let Err(error) = state.chat.store.write(op).await {
        return internal_error(error);
    }
    tracing::info!(user = %user.id, %ip, "logged in");
    signed_in(StatusCode::OK, user, token, &state, &headers)
}

/// `POST /api/logout`: deletes the session (its token stops working at once), closes its
/// sockets with 1008 and clears the cookie.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0");
    if let Some(found) = authenticate(&state, &headers).await {
        let op = WriteOp::DeleteSession {
            id: found.session.clone(),
        };
        if let Err(error) = state.chat.store.write(op).await {
            return internal_error(error);
        }
        let closed = state.auth.end_session(&found.session);
        tracing::info!(user = %found.user.id, sockets = closed, "logged out");
    }
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response()
}
