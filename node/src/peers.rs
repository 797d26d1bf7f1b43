//! Peer links: one per organisation this node delivers to — its endpoint,
//! the live link state `bluewire peers` shows (connected, failures, last
//! error, negotiated key exchange) and the wake-up its delivery worker waits
//! on. Holds no messages and decides nothing.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::PeerConfig;
use crate::tls::LinkInfo;

/// Live state of one peer link, shown by `bluewire status` / `peers`.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub connected: bool,
    pub consecutive_failures: u32,
    pub last_error: String,
    pub last_success_ms: i64,
}

/// Handle to a peer's delivery worker.
#[derive(Debug)]
pub struct PeerLink {
    pub org: String,
    /// Set when entries older than what the worker already sent were queued
    /// (e.g. history for a new member): the worker rescans from the start.
    pub rescan: AtomicBool,
    pub endpoint: String,
    pub notify: Notify,
    pub stats: Mutex<PeerStats>,
    pub link: Arc<Mutex<LinkInfo>>,
}

impl PeerLink {
    pub fn new(peer: &PeerConfig) -> Arc<Self> {
        Arc::new(Self {
            org: peer.org.clone(),
            rescan: AtomicBool::new(false),
            endpoint: peer.endpoint.clone(),
            notify: Notify::new(),
            stats: Mutex::new(PeerStats::default()),
            link: Arc::new(Mutex::new(LinkInfo::default())),
        })
    }

    pub fn stats(&self) -> PeerStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn kx_group(&self) -> String {
        self.link
            .lock()
            .map(|l| l.kx_group.clone())
            .unwrap_or_default()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut PeerStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }
}
