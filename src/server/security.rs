//! HTTP security headers: a per-page Content-Security-Policy built around Leptos' script
//! nonce, and the fixed headers every response carries.

use axum::http::{header, HeaderName, HeaderValue};
use leptos::config::LeptosOptions;
use tower_http::set_header::SetResponseHeaderLayer;

/// For pages: scripts only from this origin or inline with this response's nonce (Leptos puts
/// it on its hydration scripts), WebAssembly allowed, styles only from files, no framing.
pub fn page_policy(nonce: &str, options: &LeptosOptions) -> String {
    // `cargo leptos watch` reloads the page over a WebSocket on its own port.
    let dev_reload = match options.env {
        leptos::config::Env::DEV => format!(" ws://{}:{}", options.site_addr.ip(), options.reload_port),
        leptos::config::Env::PROD => String::new(),
    };
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'{dev_reload}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Called while a page renders: sets its CSP with the nonce leptos_axum generated for it.
pub fn set_page_policy(options: &LeptosOptions) {
    let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        leptos::prelude::use_context::<leptos_axum::ResponseOptions>(),
    ) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&page_policy(&nonce, options)) {
        response.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// Headers for every response; a response that set its own CSP (pages) keeps it.
pub fn layers() -> impl Iterator<Item = SetResponseHeaderLayer<HeaderValue>> {
    let fixed: [(HeaderName, &'static str); 5] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ];
    fixed
        .into_iter()
        .map(|(name, value)| SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)))
}
