//! The server binary: load configuration (exit 2 when it is bad), set up logging, serve.

use huddle::server::{self, config::Config};

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
