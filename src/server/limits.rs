//! Abuse limits: token buckets per connection (chat messages, other requests, typing,
//! whiteboard batches) and per client IP (new connections per 10 s, open connections), built
//! on `governor`.

use super::config::Config;
use axum::http::HeaderMap;
use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Which bucket a client message draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// Chat messages (`send`): the flood that other people see.
    Chat,
    /// Everything else a client asks for (history, subscribe, rooms...), and undecodable frames.
    Request,
    /// Typing updates: best effort, dropped silently over the limit.
    Typing,
    /// Whiteboard stroke batches.
    Board,
}

/// The three buckets of one connection.
pub struct ConnectionRates {
    chat: DefaultDirectRateLimiter,
    request: DefaultDirectRateLimiter,
    typing: DefaultDirectRateLimiter,
    board: DefaultDirectRateLimiter,
}

/// The one clock every bucket reads. Making a clock queries the CPU's features (`cpuid`, a
/// trap to the hypervisor on a VM): four per connection were a tenth of the runtime's time
/// while thousands of clients reconnected at once.
pub fn clock() -> &'static DefaultClock {
    static CLOCK: OnceLock<DefaultClock> = OnceLock::new();
    CLOCK.get_or_init(DefaultClock::default)
}

impl ConnectionRates {
    pub fn new(config: &Config) -> Self {
        let bucket =
            |rate: u32, burst: u32| RateLimiter::direct_with_clock(per_second(rate, burst), clock().clone());
        ConnectionRates {
            chat: bucket(config.msg_rate_per_s, config.msg_burst),
            request: bucket(config.request_rate_per_s, config.request_burst),
            typing: bucket(config.typing_rate_per_s, config.typing_rate_per_s * 2),
            board: bucket(config.board_batches_per_s, config.board_batches_per_s * 2),
        }
    }

    /// Takes one token; `Err(wait)` says how long until the next one.
    pub fn take(&self, bucket: Bucket) -> Result<(), Duration> {
        let limiter = match bucket {
            Bucket::Chat => &self.chat,
            Bucket::Request => &self.request,
            Bucket::Typing => &self.typing,
            Bucket::Board => &self.board,
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(clock().now()))
    }
}

fn per_second(rate: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(rate.max(1)).expect("at least 1"))
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"))
}

/// Why a new connection from some IP is turned away before the upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum IpRefusal {
    /// More than `ip_connects_per_10s` new connections in the window.
    TooManyNew,
    /// Already `ip_max_open` connections open.
    TooManyOpen,
}

/// Per-IP gate for new WebSocket connections.
pub struct IpGate {
    new_connections: DefaultKeyedRateLimiter<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
    max_open: u32,
}

impl IpGate {
    pub fn new(config: &Config) -> Self {
        let per_10s = config.ip_connects_per_10s.max(1);
        // A full bucket of `per_10s`, refilled evenly over 10 s.
        let quota =
            Quota::with_period(Duration::from_millis(10_000 / per_10s as u64).max(Duration::from_micros(1)))
                .expect("non-zero period")
                .allow_burst(NonZeroU32::new(per_10s).expect("at least 1"));
        IpGate {
            new_connections: RateLimiter::keyed(quota),
            open: Default::default(),
            max_open: config.ip_max_open,
        }
    }

    /// Admits one connection from `ip`; the returned guard counts it as open until dropped.
    pub fn admit(&self, ip: IpAddr) -> Result<OpenConnection, IpRefusal> {
        let mut open = self.open.lock().expect("ip table lock");
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max_open {
            return Err(IpRefusal::TooManyOpen);
        }
        if self.new_connections.check_key(&ip).is_err() {
            if *count == 0 {
                open.remove(&ip);
            }
            return Err(IpRefusal::TooManyNew);
        }
        *count += 1;
        Ok(OpenConnection {
            ip,
            open: self.open.clone(),
        })
    }

    /// Forgets rate state of IPs that have been quiet; call now and then.
    pub fn forget_idle(&self) {
        self.new_connections.retain_recent();
        self.new_connections.shrink_to_fit();
    }
}

/// Counts one open connection of an IP until dropped.
pub struct OpenConnection {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("ip table lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The client's address: the TCP peer, or, when `client_ip_header` is configured (the server
/// sits behind a proxy that appends to it), the right-most address in that header, which is
/// the one the trusted proxy saw.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, client_ip_header: &str) -> IpAddr {
    if client_ip_header.is_empty() {
        return peer.ip();
    }
    headers
        .get_all(client_ip_header)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .next_back()
        .unwrap_or(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            ip_connects_per_10s: 3,
            ip_max_open: 2,
            ..Config::default()
        }
    }

    #[test]
    fn open_connections_per_ip_are_capped_and_released() {
        let gate = IpGate::new(&Config {
            ip_connects_per_10s: 100,
            ..config()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = gate.admit(ip).unwrap();
        let _second = gate.admit(ip).unwrap();
        assert_eq!(gate.admit(ip).err(), Some(IpRefusal::TooManyOpen));
        assert!(
            gate.admit("10.0.0.2".parse().unwrap()).is_ok(),
            "other IPs are unaffected"
        );
        drop(first);
        assert!(gate.admit(ip).is_ok());
    }

    #[test]
    fn new_connections_per_ip_are_rate_limited() {
        let gate = IpGate::new(&Config {
            ip_max_open: 100,
            ..config()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            drop(gate.admit(ip).unwrap());
        }
        assert_eq!(gate.admit(ip).err(), Some(IpRefusal::TooManyNew));
    }

    #[test]
    fn chat_bucket_allows_the_burst_then_says_how_long_to_wait() {
        let rates = ConnectionRates::new(&Config {
            msg_rate_per_s: 10,
            msg_burst: 20,
            ..Config::default()
        });
        for _ in 0..20 {
            rates.take(Bucket::Chat).unwrap();
        }
        let wait = rates.take(Bucket::Chat).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(rates.take(Bucket::Request).is_ok(), "buckets are separate");
    }

    #[test]
    fn client_ip_comes_from_the_configured_header_only() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7".parse().unwrap());
        assert_eq!(client_ip(peer, &headers, ""), peer.ip());
        assert_eq!(
            client_ip(peer, &headers, "x-forwarded-for"),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }
}
