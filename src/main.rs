//! The server binary: load configuration (exit 2 when it is bad), set up logging, serve.

use huddle::server::{self, config::Config};

// Tens of thousands of small per-connection allocations: mimalloc keeps RSS per idle
// connection several KiB below glibc malloc's (measured with `huddle-loadgen idle`).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let config = match Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("huddle: {error}");
            std::process::exit(2);
        }
    };
    server::init_tracing(&config);
    if let Err(error) = server::serve(config).await {
        tracing::error!(%error, "server failed");
        std::process::exit(1);
    }
}
