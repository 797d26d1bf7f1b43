//! A fault-injecting TCP proxy on loopback: a link between two nodes that a test can cut
//! and heal. It stands where a router would: every byte between the two ends passes it.
//!
//! - [`FaultProxy::cut`] is a black hole, as when a route disappears: connections open at
//!   the time freeze (nothing passes either way, nothing is closed) and stay frozen for
//!   good, like a TCP connection whose retransmissions have backed off beyond the test's
//!   horizon; new connections are accepted and then ignored, as a SYN into a black hole
//!   would hang.
//! - [`FaultProxy::refuse`] answers new connections with an immediate close (a host that
//!   is up but has nothing listening) and freezes open ones.
//! - [`FaultProxy::heal`] forwards new connections again. Frozen ones stay frozen: a
//!   sender must notice and dial again.
//! - [`FaultProxy::slow`] caps the link's bandwidth (each direction, every open and new
//!   connection), as a congested or emergency backup link would; [`FaultProxy::fast`]
//!   lifts the cap.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    BlackHole,
    Refuse,
}

struct Shared {
    mode: watch::Sender<Mode>,
    /// Bumped by every cut; a connection accepted before the latest cut is frozen.
    cuts: AtomicU64,
    /// Sockets held open without forwarding (frozen or black-holed), until the proxy drops.
    held: Mutex<Vec<TcpStream>>,
    accepted: AtomicU64,
    /// Bytes per second each direction may carry; 0 = unlimited.
    rate: AtomicU64,
}

/// A proxy from `addr()` to one upstream address. Dropping it stops it and closes every
/// socket it holds.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy on 127.0.0.1:0");
        FaultProxy::start_on(listener, upstream)
    }

    /// Forward connections accepted by `listener` to `upstream`.
    pub fn start_on(listener: TcpListener, upstream: SocketAddr) -> FaultProxy {
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Pass);
        let shared = Arc::new(Shared {
            mode,
            cuts: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            rate: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                s.accepted.fetch_add(1, Ordering::Relaxed);
                // The epoch before the mode: a cut after this read freezes the connection.
                let epoch = s.cuts.load(Ordering::SeqCst);
                let mode = *s.mode.borrow();
                match mode {
                    Mode::Refuse => drop(down),
                    Mode::BlackHole => hold(&s, down),
                    Mode::Pass => {
                        conns.spawn(forward(s.clone(), down, upstream, epoch));
                    }
                }
                while conns.try_join_next().is_some() {}
            }
        });
        FaultProxy { addr, shared, task }
    }

    /// The address to give a node as its peer's endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Black-hole the link (see the module documentation).
    pub fn cut(&self) {
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        self.shared.mode.send_replace(Mode::BlackHole);
    }

    /// Refuse new connections and freeze open ones.
    pub fn refuse(&self) {
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        self.shared.mode.send_replace(Mode::Refuse);
    }

    /// Forward new connections again.
    pub fn heal(&self) {
        self.shared.mode.send_replace(Mode::Pass);
    }

    /// Carry at most `bytes_per_sec` each way, on open connections too.
    pub fn slow(&self, bytes_per_sec: u64) {
        self.shared
            .rate
            .store(bytes_per_sec.max(1), Ordering::SeqCst);
    }

    /// Lift the bandwidth cap.
    pub fn fast(&self) {
        self.shared.rate.store(0, Ordering::SeqCst);
    }

    /// Connections accepted so far (dial attempts that reached the proxy).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut h) = self.shared.held.lock() {
            h.clear();
        }
    }
}

fn hold(s: &Shared, sock: TcpStream) {
    if let Ok(mut h) = s.held.lock() {
        h.push(sock);
    }
}

/// Copy both ways until either end closes or a cut freezes the connection.
async fn forward(s: Arc<Shared>, mut down: TcpStream, upstream: SocketAddr, epoch: u64) {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let mut mode = s.mode.subscribe();
    let frozen = async {
        loop {
            if s.cuts.load(Ordering::SeqCst) != epoch {
                return;
            }
            if mode.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let (down_r, down_w) = down.split();
    let (up_r, up_w) = up.split();
    let copied = tokio::select! {
        _ = async { tokio::join!(pump(&s, down_r, up_w), pump(&s, up_r, down_w)) } => true,
        () = frozen => false,
    };
    if !copied {
        hold(&s, down);
        hold(&s, up);
    }
}

/// Copy one direction until EOF or an error, at most `s.rate` bytes per second when set;
/// then close the writing side.
async fn pump(
    s: &Shared,
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let rate = s.rate.load(Ordering::SeqCst);
        // Shaped: chunks of about 1/20 s worth, so the cap holds smoothly.
        let max = if rate == 0 {
            buf.len()
        } else {
            usize::try_from(rate / 20)
                .unwrap_or(usize::MAX)
                .clamp(1, buf.len())
        };
        let n = match from.read(&mut buf[..max]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if rate != 0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
