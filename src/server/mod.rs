//! The server (ssr build only): shared state, the HTTP router, start-up and graceful shutdown.

pub mod auth;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod files;
pub mod limits;
pub mod metrics;
pub mod security;
pub mod socketio;
pub mod store;
pub mod ws;

use crate::app::{shell, App};
use axum::{
    extract::{ConnectInfo, FromRef, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Json},
    routing::{get, post},
    Router,
};
use chat::{hub::Hub, Chat, ChatLimits};
use config::{Config, LogFormat};
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::{compression::CompressionLayer, services::ServeDir, set_header::SetResponseHeaderLayer};

/// Cheap-to-clone handle to everything request handlers share.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    /// The chat domain: store, hub and limits.
    pub chat: Arc<Chat>,
    /// Leptos rendering options (site root, output name, hashed file names).
    pub leptos: LeptosOptions,
    /// Cancelled once when shutdown begins; every session watches it.
    pub shutdown: CancellationToken,
    /// Tracks session tasks so shutdown can wait for their close frames to go out.
    pub sessions: TaskTracker,
    /// Caps simultaneous WebSocket connections at `config.max_connections`.
    pub connection_slots: Arc<Semaphore>,
    /// Session tokens, log-in throttles, sockets per session.
    pub auth: auth::Auth,
    /// Per-IP limits on new and open WebSocket connections.
    pub ip_gate: limits::IpGate,
    /// Open WebSocket connections, for /health.
    pub connections: AtomicUsize,
    /// Source of connection ids.
    pub next_connection_id: std::sync::atomic::AtomicU64,
    /// False until start-up has finished and again once shutdown begins.
    pub ready: AtomicBool,
    pub started: Instant,
    /// This node's name in a cluster.
    pub node_id: String,
    /// The link to the other nodes (Redis), when configured.
    pub cluster: Option<Arc<cluster::Cluster>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl AppState {
    /// Opens the store in the data folder and builds the shared state.
    pub async fn new(config: Config) -> std::io::Result<Self> {
        let leptos = leptos_options(&config);
        let secret = auth::load_or_create_secret(&config.jwt_secret, &config.data_dir)?;
        let hub = Arc::new(Hub::new(
            config.outbound_queue as usize,
            config.direct_fanout_max as usize,
        ));
        let relay = cluster::Relay::new(hub.clone());
        let node_id = config.node_id();
        let cluster = match config.redis_url.as_str() {
            "" => None,
            url => {
                let ttl = Duration::from_secs(config.presence_ttl_s.into());
                Some(
                    cluster::Cluster::start(url, node_id.clone(), ttl, relay.clone())
                        .map_err(std::io::Error::other)?,
                )
            }
        };
        let store = store::Store::open(&config.database_url(), config.sqlite_synchronous, {
            let (relay, cluster) = (relay.clone(), cluster.clone());
            Arc::new(move |message| {
                relay.offer(message);
                if let Some(cluster) = &cluster {
                    cluster.announce(message);
                }
            })
        })
        .await
        .map_err(std::io::Error::other)?;
        relay.start(store.clone());
        let limits = ChatLimits {
            max_message_chars: config.max_message_chars,
            max_history_page: config.max_history_page,
            max_resume: config.max_resume,
            board_points_per_batch: config.board_points_per_batch,
            board_max_segments: config.board_max_segments,
        };
        let admins = config
            .admins
            .iter()
            .map(|name| store::name_key(name.trim()))
            .collect();
        let chat = Arc::new(Chat {
            store,
            hub,
            relay,
            cluster: cluster.clone(),
            limits,
            admins,
        });
        Ok(AppState(Arc::new(Shared {
            chat,
            connection_slots: Arc::new(Semaphore::new(config.max_connections as usize)),
            ip_gate: limits::IpGate::new(&config),
            auth: auth::Auth::new(&secret, config.session_ttl_s, config.login_attempts_per_min),
            node_id,
            cluster,
            config,
            leptos,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            next_connection_id: Default::default(),
            ready: AtomicBool::new(false),
            started: Instant::now(),
        })))
    }
}

/// Leptos options from our configuration. cargo-leptos writes `hash.txt` beside the binary when
/// it hashed the asset names; its presence is what tells us to link the hashed names.
fn leptos_options(config: &Config) -> LeptosOptions {
    let hash_files = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hash.txt").exists()))
        .unwrap_or(false);
    let env = match std::env::var("LEPTOS_ENV").as_deref() {
        Ok("DEV") => leptos::config::Env::DEV,
        _ => leptos::config::Env::PROD,
    };
    let reload_port = std::env::var("LEPTOS_RELOAD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    LeptosOptions::builder()
        .output_name("huddle")
        .site_root(config.site_root.to_string_lossy().as_ref())
        .site_pkg_dir("pkg")
        .site_addr(config.addr)
        .env(env)
        .reload_port(reload_port)
        .hash_files(hash_files)
        .build()
}

/// The whole HTTP surface: pages, assets, /health and /ws.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let pkg_cache = if state.leptos.hash_files {
        // Hashed names change whenever the content does, so browsers may keep them forever.
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let pkg_dir = state.config.site_root.join("pkg");
    let client = state.config.client_settings();
    let pages = Router::new()
        .leptos_routes(&state, routes, {
            let options = state.leptos.clone();
            move || {
                security::set_page_policy(&options);
                shell(options.clone(), client)
            }
        })
        .nest_service(
            "/pkg",
            tower::ServiceBuilder::new()
                .layer(SetResponseHeaderLayer::overriding(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(pkg_cache),
                ))
                .service(ServeDir::new(pkg_dir)),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(
            move |options| {
                security::set_page_policy(&options);
                shell(options, client)
            },
        ))
        .layer(CompressionLayer::new());
    let mut app = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/health", get(health))
        .route("/metrics", get(prometheus_metrics))
        .route("/api/guest", post(auth::create_guest))
        .route("/api/register", post(auth::register))
        .route("/api/login", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/rooms/{room}/files", post(files::upload))
        .route("/files/{id}", get(files::download))
        .route("/files/{id}/thumb", get(files::thumbnail))
        .merge(pages)
        .with_state(state.clone());
    if state.config.socketio {
        // `/socket.io/`: a second door into the same chat for Socket.IO clients.
        app = app.layer(socketio::layer(state));
    }
    for layer in security::layers() {
        app = app.layer(layer);
    }
    app
}

/// Liveness and readiness for load balancers: 200 when serving, 503 while starting or draining.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.ready.load(Ordering::Relaxed);
    let database_up = state.chat.store.ping().await;
    let status = match (ready, database_up) {
        (true, true) => "ok",
        (true, false) => "degraded",
        _ if state.shutdown.is_cancelled() => "draining",
        _ => "starting",
    };
    let body = serde_json::json!({
        "status": status,
        "node": state.node_id,
        "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "connections": state.connections.load(Ordering::Relaxed),
        "database": {
            "backend": state.chat.store.backend().name(),
            "state": if database_up { "ok" } else { "down" },
        },
        "redis": state.cluster.as_ref().map(|c| if c.redis_up() { "ok" } else { "down" }),
        // With Redis: signed-in connections on every node, from their presence reports.
        "cluster": state.cluster.as_ref().map(|c| serde_json::json!({ "connections": c.total_connections() })),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
    });
    // Without its database a node can neither store nor resume: let the balancer skip it.
    let status = if ready && database_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body))
}

/// `GET /metrics` (Prometheus text format), for scrapers on the same machine only: a request
/// from another address, or one relayed by a proxy (`X-Forwarded-For`), gets 404.
async fn prometheus_metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if !peer.ip().is_loopback() || headers.contains_key("x-forwarded-for") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let metrics = metrics::metrics();
    metrics
        .connections
        .set(state.connections.load(Ordering::Relaxed) as i64);
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics.render(),
    )
        .into_response()
}

/// Sets up logging for the chosen format.
pub fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
}

/// Binds, serves until SIGTERM or Ctrl-C, then drains: WebSockets get a 1001 close, and the
/// process returns within `shutdown_grace_s` whatever clients do.
pub async fn serve(config: Config) -> std::io::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    raise_open_file_limit(config.max_connections);
    let listener = TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config).await?;
    let app = router(state.clone());
    tokio::spawn({
        let state = state.clone();
        let hub = state.chat.hub.clone();
        let shutdown = state.shutdown.clone();
        async move {
            // Presence goes out coalesced; typing marks lapse.
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut ticks: u32 = 0;
            while shutdown.run_until_cancelled(tick.tick()).await.is_some() {
                hub.flush_presence();
                hub.expire_typing();
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(4) {
                    // once a second: new messages join the search index in one batch
                    let store = state.chat.store.clone();
                    tokio::spawn(async move {
                        if let Err(error) = store.catch_up_search().await {
                            tracing::warn!(%error, "indexing new messages for search failed");
                        }
                    });
                }
                if ticks.is_multiple_of(240) {
                    // once a minute
                    state.ip_gate.forget_idle();
                    state.auth.forget_idle();
                    let store = state.chat.store.clone();
                    tokio::spawn(async move {
                        if let Err(error) = store.write(store::WriteOp::PruneSessions).await {
                            tracing::warn!(%error, "pruning expired sessions failed");
                        }
                    });
                }
            }
        }
    });
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(%addr, site_root = %state.config.site_root.display(), "listening");

    tokio::spawn({
        let state = state.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; closing connections");
            state.ready.store(false, Ordering::Relaxed);
            state.shutdown.cancel();
        }
    });

    let grace = Duration::from_secs(state.config.shutdown_grace_s as u64);
    let server = tokio::spawn(
        axum::serve(
            // Chat frames are small and latency matters: without TCP_NODELAY, Nagle's
            // algorithm held frames back for the peer's delayed ACK (20-40 ms tails).
            axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
            }),
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(state.shutdown.clone().cancelled_owned())
        .into_future(),
    );
    state.shutdown.cancelled().await;
    // Upgraded sockets live outside axum's connection tracking; wait for their sessions too.
    let drain = async {
        let served = server.await;
        state.sessions.close();
        state.sessions.wait().await;
        served
    };
    let drained = tokio::time::timeout(grace, drain).await;
    if let Some(cluster) = &state.chat.cluster {
        cluster.leave().await;
    }
    match drained {
        Ok(Ok(result)) => result?,
        Ok(Err(join_error)) => tracing::error!(%join_error, "server task failed"),
        Err(_) => tracing::warn!(
            remaining = state.sessions.len(),
            "shutdown grace elapsed; exiting anyway"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Descriptors the server holds besides its WebSockets: database files and pools, the
/// listener, Redis, uploads being written.
const OTHER_DESCRIPTORS: u64 = 64;

/// Raises the soft open-file limit to the hard one, as the kernel lets any process do, and
/// returns the soft limit now in force (0 when it cannot be read). Linux starts processes at
/// a soft 1,024; the load generator needs more too.
pub fn raise_open_file_limit_to_hard() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    }
}

/// One open file per WebSocket: below `max_connections` `accept` fails and the listener
/// pauses, refusing everyone. Raises the limit and warns when even the hard limit is too low.
fn raise_open_file_limit(max_connections: u32) {
    let limit = raise_open_file_limit_to_hard();
    let needed = u64::from(max_connections) + OTHER_DESCRIPTORS;
    if limit < needed {
        tracing::warn!(
            limit,
            needed,
            "open-file limit is below max_connections; raise the hard limit (ulimit -Hn, or LimitNOFILE= under systemd) or lower max_connections"
        );
    } else {
        tracing::debug!(limit, "open-file limit");
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
