//! Wiring: builds a node from its validated config (store, keys, TLS,
//! delivery workers, gRPC services) and serves it on a listener until the
//! shutdown signal, then drains. `Node::start` binds first and returns a
//! handle, so tests bind `127.0.0.1:0` without sleeps. No domain logic here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{Instrument, info};

use crate::config::NodeConfig;
use crate::delivery::{self, PeerLink};
use crate::pki::PeerIdentity;
use crate::routing::Router;
use crate::signing::SigningKey;
use crate::state::NodeState;
use crate::store::Store;
use crate::tls::{self, TlsIdentity};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("signing key {path}: {message}")]
    SigningKey { path: String, message: String },
    #[error("encryption key {path}: {message}")]
    EncryptionKey { path: String, message: String },
    #[error("node certificate: {0}")]
    Identity(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the signing thread: {0}")]
    Sealer(std::io::Error),
    #[error("local policy: {0}")]
    Policy(String),
    #[error("cluster logs in the store: {0}")]
    Clusters(String),
    #[error("gRPC server failed: {0}")]
    Serve(String),
    /// Stopped serving, but something still holds the store open (only matters to a process
    /// that wants to open the same data_dir again; a daemon that exits releases it anyway).
    #[error("{0}")]
    StillHeld(String),
}

/// A running node.
pub struct Node {
    pub state: Arc<NodeState>,
    served: tokio::task::JoinHandle<Result<(), NodeError>>,
    /// A node dropped without [`Node::shutdown`] still stops its server and tasks.
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl Node {
    /// Bind `config.listen` and start serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Self::start_on(config, listener).await
    }

    /// Start serving on an already bound listener.
    pub async fn start_on(config: NodeConfig, listener: TcpListener) -> Result<Node, NodeError> {
        tls::install_default_provider();
        let listen = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
        let tls = TlsIdentity::load(
            &config.tls.ca,
            &config.tls.cert,
            &config.tls.key,
            config.tls.crl.as_deref(),
        )?;
        let profile = match tls.own_identity() {
            Ok(PeerIdentity::Node { profile, .. }) => profile,
            Ok(other) => {
                return Err(NodeError::Identity(format!(
                    "{} is not a node certificate ({other:?}): issue one with `bluewire pki issue`",
                    config.tls.cert.display()
                )));
            }
            Err(e) => {
                return Err(NodeError::Identity(format!(
                    "{}: {e}",
                    config.tls.cert.display()
                )));
            }
        };
        if profile.org != config.org {
            return Err(NodeError::Identity(format!(
                "config says org = {:?} but {} was issued to {:?}",
                config.org,
                config.tls.cert.display(),
                profile.org
            )));
        }
        let key_err = |message: String| NodeError::SigningKey {
            path: config.tls.signing_key.display().to_string(),
            message,
        };
        let pem =
            std::fs::read_to_string(&config.tls.signing_key).map_err(|e| key_err(e.to_string()))?;
        let signer = Arc::new(
            SigningKey::from_pkcs8_pem(&profile.org, &pem).map_err(|e| key_err(e.to_string()))?,
        );
        if !profile.signing_keys.iter().any(|k| {
            k.key_id == signer.key_id()
                && k.public_key(&profile.org)
                    .is_ok_and(|pk| pk == signer.public_key())
        }) {
            return Err(key_err(format!(
                "key {} is not certified in {}: use the signing.key issued with this certificate",
                signer.key_id(),
                config.tls.cert.display()
            )));
        }
        let decryptors = match config.tls.encryption_key.as_deref() {
            Some(path) => {
                let mut keys = vec![load_encryption_key(path, &profile, &config.tls.cert)?];
                keys.extend(load_retired_keys(path, &profile.org)?);
                keys
            }
            None => Vec::new(),
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::open_with(&config.data_dir, config.store.mode())?;
        let tasks = crate::tasks::Tasks::new();
        // From here on, a start that fails (or a node dropped without shutdown) stops every
        // task already spawned.
        let stop_on_drop = tasks.stopping().drop_guard();
        let server_config = tls.server_config()?;
        let client_config = tls.federation_client_config(config.tls.allow_classical_kx)?;
        if config.tls.allow_classical_kx {
            tracing::warn!(
                "[tls] allow_classical_kx = true: links with other nodes may use classical key exchange (X25519, P-256) instead of X25519MLKEM768"
            );
        }
        tls.spawn_crl_watcher(Duration::from_secs(config.tls.crl_poll_secs), &tasks);

        let policy = Arc::new(
            crate::policy::PolicyHandle::new(config.policy.file.clone())
                .map_err(|e| NodeError::Policy(e.to_string()))?,
        );
        policy.spawn_watcher(Duration::from_secs(config.policy.reload_secs), &tasks);
        let state = Arc::new(NodeState {
            profile: profile.clone(),
            store: store.clone(),
            sealer: crate::sealer::Sealer::start(
                signer.clone(),
                Duration::from_micros(config.delivery.linger_us),
            )
            .map_err(NodeError::Sealer)?,
            signer,
            verified_batches: crate::envelope::VerifiedBatches::default(),
            decryptors,
            router: Router::with_policy(policy.clone()).with_former_member_grace_ms(
                i64::try_from(config.clusters.former_member_grace_secs)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            ),
            tls: tls.clone(),
            peers: DashMap::new(),
            started_at_ms: crate::clock::now_ms(),
            listen,
            config: config.clone(),
            clusters: DashMap::new(),
            cluster_lock: tokio::sync::Mutex::new(()),
            directory: {
                let d = crate::directory::Directory::new(profile.clone());
                if let Some(own) = tls.chain.first() {
                    d.note_serials(&profile, own);
                }
                d
            },
            fed_clients: DashMap::new(),
            dialer: crate::peers::Dialer {
                client_config,
                root_der: tls.root_der.clone(),
                max_request_bytes: config.limits.max_request_bytes,
                keepalive: Duration::from_millis(config.delivery.keepalive_ms),
            },
            tasks: tasks.clone(),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            peer_limits: crate::ratelimit::RateLimiter::new(
                config.limits.peer_rate_per_sec,
                config.limits.peer_burst,
            ),
            client_limits: crate::ratelimit::RateLimiter::new(
                config.limits.client_rate_per_sec,
                config.limits.client_burst,
            ),
            taxii_listen: std::sync::OnceLock::new(),
            deliver_streams: Default::default(),
        });
        state
            .directory
            .load(&state.store, &state.tls.root_der)
            .await
            .map_err(NodeError::Store)?;
        if let Some(own) = state.tls.chain.first() {
            state.directory.remember_own(&state.store, own).await;
        }
        for p in &config.peers {
            let link = PeerLink::new(p);
            state.peers.insert(p.org.clone(), link.clone());
            delivery::spawn_worker(link, state.clone());
        }
        if let Err(e) = crate::replication::load(&state).await {
            return Err(NodeError::Clusters(e.to_string()));
        }
        // Envelopes this node took on as a relay before it stopped go on to their recipients.
        for org in state.store.relay_targets().map_err(NodeError::Store)? {
            match state.directory.profile(&org, None) {
                Some(p) => state.ensure_peer(&org, &p.endpoint),
                None => {
                    tracing::warn!(relay.to = %org, "holding envelopes to carry to an organisation whose certificate this node no longer knows")
                }
            }
        }
        // Every policy change that takes effect is audited.
        {
            let st = state.clone();
            let mut changes = policy.subscribe();
            let initial = changes.borrow_and_update().clone();
            let stopping = tasks.stopping();
            st.audit(vec![crate::audit::AuditEvent::policy(match &initial {
                Some(h) => format!("local policy in force at start: sha256 {h}"),
                None => "no local policy at start: built-in rules only".to_string(),
            })])
            .await;
            // To its end: a policy change that took effect is always audited.
            tasks.spawn_to_end(tracing::info_span!("policy-audit"), async move {
                loop {
                    tokio::select! {
                        r = changes.changed() => if r.is_err() { break },
                        () = stopping.cancelled() => break,
                    }
                    let h = changes.borrow_and_update().clone();
                    st.audit(vec![crate::audit::AuditEvent::policy(match h {
                        Some(h) => format!("local policy reloaded: sha256 {h}"),
                        None => "local policy removed".to_string(),
                    })])
                    .await;
                }
            });
        }
        if let Some(addr) = config.metrics.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })?;
            info!(metrics.listen = %addr, "Prometheus endpoint on http://{addr}/metrics");
            let st = state.clone();
            crate::metrics::serve_http(listener, Arc::new(move || st.render_metrics()), &tasks);
        }
        if config.taxii.enabled {
            let addr = config.taxii.listen;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })?;
            let bound = listener.local_addr().unwrap_or(addr);
            let _ = state.taxii_listen.set(bound);
            let taxii_tls = tls
                .taxii_server_config()
                .map_err(|e| NodeError::Serve(format!("TAXII TLS configuration: {e}")))?;
            info!(taxii.listen = %bound, "TAXII 2.1 server on https://{bound}/taxii2/");
            crate::taxii::serve(state.clone(), listener, taxii_tls);
        }
        crate::replication::spawn_sync(
            state.clone(),
            Duration::from_millis(config.clusters.sync_interval_ms),
        );
        crate::workflow::spawn_clocks(state.clone());

        let incoming = tls::incoming(
            listener,
            tls.clone(),
            server_config,
            tls::AcceptRules {
                handshake_timeout: Duration::from_millis(config.limits.handshake_timeout_ms),
                max_connections: config.limits.max_connections,
                allow_classical_kx: config.tls.allow_classical_kx,
                metrics: state.metrics.clone(),
            },
            &tasks,
        );
        let router = crate::api::router(state.clone());
        let stopping = tasks.stopping();
        let span = tracing::info_span!("node", node.org = %profile.org, node.listen = %listen);
        let served = tokio::spawn(
            async move {
                info!(peers = config.peers.len(), "node serving");
                let r = router
                    .serve_with_incoming_shutdown(incoming, stopping.cancelled_owned())
                    .await
                    .map_err(|e| NodeError::Serve(e.to_string()));
                info!("node no longer serving");
                r
            }
            .instrument(span),
        );
        Ok(Node {
            state,
            served,
            _stop_on_drop: stop_on_drop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.state.listen
    }

    /// Stop accepting, stop workers, drain, close the store.
    ///
    /// Returns once the store file is released, so the same data directory can be opened again
    /// in this process: the server stops accepting and finishes its open calls, every tracked
    /// background task (see [`crate::tasks`]) ends, then the store commits what is pending and
    /// closes.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        const DRAIN: Duration = Duration::from_secs(10);
        let started = std::time::Instant::now();
        let Node {
            state, mut served, ..
        } = self;
        let tasks = state.tasks.clone();
        tasks.stop();
        let served = match tokio::time::timeout(DRAIN, &mut served).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(NodeError::Serve(e.to_string())),
            Err(_) => {
                served.abort();
                let _ = served.await;
                Err(NodeError::Serve(
                    "open calls did not finish within 10 s of shutdown; cut off".into(),
                ))
            }
        };
        let drained = tasks.drained(DRAIN.saturating_sub(started.elapsed())).await;
        // Commits what is pending (held acknowledgements, audit records) in every case.
        state.store.close().await;
        served
            .as_ref()
            .map_err(|e| NodeError::Serve(e.to_string()))?;
        if let Err(running) = drained {
            return Err(NodeError::StillHeld(format!(
                "{running} background task(s) still running {} s after shutdown; the store \
                 file stays locked until they end",
                DRAIN.as_secs()
            )));
        }
        // Every tracked task has ended. The only other holders are the per-connection tasks
        // tonic spawns itself, which drop their handle just after the server future ends:
        // give them a moment, bounded.
        let grace = std::time::Instant::now();
        while Arc::strong_count(&state) > 1 && grace.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let holders = Arc::strong_count(&state) - 1;
        if holders > 0 {
            return Err(NodeError::StillHeld(format!(
                "{holders} holder(s) of the node state outlived its tasks; the store file stays \
                 locked until they end"
            )));
        }
        drop(state);
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "node stopped"
        );
        Ok(())
    }

    /// Serve until `signal` completes, then shut down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), NodeError> {
        signal.await;
        self.shutdown().await
    }
}

/// The decryption keys `pki rotate` retired beside the current one (`retired/SERIAL/`
/// holding that certificate's `node.crt` and `encryption.key`), each checked against the
/// certificate it was issued with: what was encrypted to them still opens here.
fn load_retired_keys(
    current: &std::path::Path,
    org: &str,
) -> Result<Vec<crate::e2e::RecipientKey>, NodeError> {
    let dir = current
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(crate::pki::RETIRED_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(NodeError::EncryptionKey {
                path: dir.display().to_string(),
                message: format!(
                    "{e}: the node keeps the encryption keys `pki rotate` retired there; make it readable by the node's user"
                ),
            });
        }
    };
    let mut found: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("encryption.key").exists())
        .collect();
    found.sort();
    let mut keys = Vec::new();
    for d in found {
        let cert = d.join("node.crt");
        let key_path = d.join("encryption.key");
        let bad = |message: String| NodeError::EncryptionKey {
            path: key_path.display().to_string(),
            message: format!(
                "{message} (a key retired by `pki rotate`: restore {} from the rotation, or remove {} if nothing encrypted to it must open any more)",
                cert.display(),
                d.display()
            ),
        };
        let profile = std::fs::read_to_string(&cert)
            .map_err(|e| bad(format!("cannot read {}: {e}", cert.display())))
            .and_then(|pem| crate::pki::load_certs_pem(&pem).map_err(|e| bad(e.to_string())))
            .and_then(|c| match c.first().map(|c| crate::pki::cert_profile(c)) {
                Some(Ok(Some(crate::pki::CertProfile::Node(p)))) if p.org == org => Ok(p),
                _ => Err(bad(format!(
                    "{} is not a node certificate of {org}",
                    cert.display()
                ))),
            })?;
        let key = load_encryption_key(&key_path, &profile, &cert).map_err(|e| match e {
            NodeError::EncryptionKey { message, .. } => bad(message
                .split(": use the encryption.key")
                .next()
                .unwrap_or_default()
                .to_string()),
            other => other,
        })?;
        tracing::info!(key.id = %key.key_id(), path = %key_path.display(), "retired decryption key loaded");
        keys.push(key);
    }
    Ok(keys)
}

/// The decryption key at `path`, which `profile` (from `cert`) must certify.
fn load_encryption_key(
    path: &std::path::Path,
    profile: &crate::pki::OrgProfile,
    cert: &std::path::Path,
) -> Result<crate::e2e::RecipientKey, NodeError> {
    let err = |message: String| NodeError::EncryptionKey {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "{e}: use the encryption.key issued with this certificate, or remove \
             [tls] encryption_key (then nothing encrypted to this organisation opens here)"
        ))
    })?;
    let key =
        crate::e2e::RecipientKey::from_pem(&profile.org, &pem).map_err(|e| err(e.to_string()))?;
    if !profile.encryption_keys.iter().any(|k| {
        k.key_id == key.key_id()
            && k.public_key(&profile.org)
                .is_ok_and(|pk| pk == key.public_key())
    }) {
        return Err(err(format!(
            "key {} is not certified in {}: use the encryption.key issued with this certificate",
            key.key_id(),
            cert.display()
        )));
    }
    Ok(key)
}
