//! Mutual TLS 1.3 for every link: rustls configs on the aws-lc-rs provider
//! with the post-quantum hybrid X25519MLKEM768 group first, certificate
//! verification against the federation root plus the CA-signed revocation
//! list (reloadable without restart), the accept loop that turns verified
//! connections into [`ConnInfo`] for the API layer, and the outgoing
//! connector. It must never accept a connection whose identity it could not
//! derive from a verified certificate, and never offers anything below TLS 1.3.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, info, warn};

use crate::pki::{self, PeerIdentity};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Material { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("revocation list {path}: {message}")]
    Crl { path: PathBuf, message: String },
}

/// The one crypto provider: aws-lc-rs, with the post-quantum hybrid group
/// preferred. Idempotent process-wide install for libraries that ask for
/// the default provider.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![
        rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768,
        rustls::crypto::aws_lc_rs::kx_group::X25519,
        rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
    ];
    Arc::new(p)
}

/// The provider for links between nodes: X25519MLKEM768 only, unless the operator set
/// `[tls] allow_classical_kx` (then as [`provider`]).
pub fn federation_provider(allow_classical_kx: bool) -> Arc<CryptoProvider> {
    if allow_classical_kx {
        return provider();
    }
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    Arc::new(p)
}

/// The only key-exchange group a node accepts from another node by default.
pub const PQ_KX_GROUP: &str = "X25519MLKEM768";

/// Whether a connection from `peer` that negotiated `kx_group` is refused: a node (not a
/// user) that got only classical key exchange, unless the operator allowed it.
pub fn classical_node_refused(
    peer: &PeerIdentity,
    kx_group: &str,
    allow_classical_kx: bool,
) -> bool {
    matches!(peer, PeerIdentity::Node { .. }) && kx_group != PQ_KX_GROUP && !allow_classical_kx
}

/// Install [`provider`] as the process default (ignored when already set).
pub fn install_default_provider() {
    let _ = (*provider()).clone().install_default();
}

/// Serials (lowercase hex) the federation CA has revoked, shared by every
/// verifier and checked again per request, so a revocation also cuts
/// connections that were open before it was loaded; with each, from when (unix ms) the
/// keys it certified are no longer trusted (a stated compromise, else the revocation).
#[derive(Debug, Default, Clone)]
pub struct Revocations {
    serials: Arc<RwLock<HashMap<String, i64>>>,
}

impl Revocations {
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.serials
            .read()
            .map(|s| s.contains_key(serial))
            .unwrap_or(true)
    }

    /// From when the keys certified by certificate `serial` are not trusted (None: not
    /// revoked). A lock that cannot be read distrusts everything.
    pub fn distrusted_since(&self, serial: &str) -> Option<i64> {
        match self.serials.read() {
            Ok(s) => s.get(serial).copied(),
            Err(_) => Some(i64::MIN),
        }
    }

    pub fn identity_revoked(&self, id: &PeerIdentity) -> bool {
        match id {
            PeerIdentity::Node { serial, .. } => self.is_revoked(serial),
            PeerIdentity::User {
                serial,
                org_ca_serial,
                ..
            } => self.is_revoked(serial) || self.is_revoked(org_ca_serial),
        }
    }

    pub fn len(&self) -> usize {
        self.serials.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn replace(&self, serials: impl IntoIterator<Item = (String, i64)>) {
        let new: HashMap<String, i64> = serials.into_iter().collect();
        if let Ok(mut s) = self.serials.write() {
            *s = new;
        }
    }

    fn check_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        for c in std::iter::once(end_entity).chain(intermediates) {
            let serial = pki::serial_hex(c).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
            if self.is_revoked(&serial) {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Revoked,
                ));
            }
        }
        Ok(())
    }
}

/// Everything a node needs for TLS: its chain and key, the root, and the
/// revocation list.
#[derive(Clone)]
pub struct TlsIdentity {
    pub root_der: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    pub revocations: Revocations,
    crl_path: Option<PathBuf>,
    crl_seen: Arc<Mutex<Option<SystemTime>>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("crl_path", &self.crl_path)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl TlsIdentity {
    /// Load from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path, crl: Option<&Path>) -> Result<Self, TlsError> {
        let material = |path: &Path, e: pki::PkiError| TlsError::Material {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let root = pki::load_certs_pem(&read(ca)?).map_err(|e| material(ca, e))?;
        let root_der = root.into_iter().next().ok_or_else(|| TlsError::Material {
            path: ca.to_path_buf(),
            message: "no certificate in file".into(),
        })?;
        let chain = pki::load_certs_pem(&read(cert)?).map_err(|e| material(cert, e))?;
        if chain.is_empty() {
            return Err(TlsError::Material {
                path: cert.to_path_buf(),
                message: "no certificate in file".into(),
            });
        }
        let key_der = pki::load_key_pem(&read(key)?).map_err(|e| material(key, e))?;
        let me = Self {
            root_der,
            chain,
            key: Arc::new(key_der),
            revocations: Revocations::default(),
            crl_path: crl.map(Path::to_path_buf),
            crl_seen: Arc::new(Mutex::new(None)),
        };
        me.reload_crl()?;
        Ok(me)
    }

    /// Identity of our own certificate (what peers will see).
    pub fn own_identity(&self) -> Result<PeerIdentity, pki::PkiError> {
        pki::identity_from_chain(&self.chain, &self.root_der)
    }

    /// Re-read the revocation list if it changed. Returns whether it did.
    /// A list that fails verification is refused and the previous one kept.
    pub fn reload_crl(&self) -> Result<bool, TlsError> {
        let Some(path) = &self.crl_path else {
            return Ok(false);
        };
        let mtime = match std::fs::metadata(path) {
            Ok(m) => m.modified().ok(),
            // Not written yet: nothing revoked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(TlsError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        {
            let seen = self.crl_seen.lock().map_err(|_| TlsError::Crl {
                path: path.clone(),
                message: "internal lock poisoned".into(),
            })?;
            if mtime.is_some() && *seen == mtime {
                return Ok(false);
            }
        }
        let pem = read(path)?;
        let crl = pki::parse_crl(&pem, &self.root_der).map_err(|e| TlsError::Crl {
            path: path.clone(),
            message: e.to_string(),
        })?;
        info!(crl.path = %path.display(), crl.revoked = crl.serials.len(), "revocation list loaded");
        self.revocations.replace(crl.distrusted_since);
        if let Ok(mut seen) = self.crl_seen.lock() {
            *seen = mtime;
        }
        Ok(true)
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root_der.clone())?;
        Ok(Arc::new(roots))
    }

    /// Server side: TLS 1.3 only, client certificate mandatory.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.server_config_with(true, b"h2")
    }

    /// The TAXII listener: TLS 1.3 only, a client certificate optional (tools that cannot
    /// present one use a token), revocation checked when one is presented; HTTP/1.1. Key
    /// exchange as everywhere: X25519MLKEM768 first, X25519 and P-256 for TLS stacks
    /// without ML-KEM.
    pub fn taxii_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.server_config_with(false, b"http/1.1")
    }

    fn server_config_with(
        &self,
        client_cert_mandatory: bool,
        alpn: &[u8],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        );
        if !client_cert_mandatory {
            builder = builder.allow_unauthenticated();
        }
        let inner = builder
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let verifier = Arc::new(RevocationCheckingClientVerifier {
            inner,
            revocations: self.revocations.clone(),
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![alpn.to_vec()];
        // No resumption: a resumed session skips certificate verification,
        // which would let a certificate revoked since the first handshake in.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(Arc::new(cfg))
    }

    /// Client side: TLS 1.3 only, presenting our chain; every key exchange group of
    /// [`provider`] (the CLI and tools).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        self.client_config_with(provider())
    }

    /// Client side for links to other nodes: as [`Self::client_config`], offering only
    /// X25519MLKEM768 unless `allow_classical_kx`.
    pub fn federation_client_config(
        &self,
        allow_classical_kx: bool,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        self.client_config_with(federation_provider(allow_classical_kx))
    }

    /// Client side with the key-exchange groups (and algorithms) of `provider`.
    pub fn client_config_with(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let verifier = Arc::new(RevocationCheckingServerVerifier {
            inner,
            revocations: self.revocations.clone(),
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        // See server_config: every connection verifies the peer afresh.
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(cfg))
    }

    /// Poll the revocation list every `every` until the node stops.
    pub fn spawn_crl_watcher(&self, every: Duration, tasks: &crate::tasks::Tasks) {
        if self.crl_path.is_none() {
            return;
        }
        let me = self.clone();
        tasks.spawn(tracing::info_span!("crl-watcher"), async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = me.reload_crl() {
                    warn!(error = %e, "revocation list not reloaded; keeping the previous one");
                }
            }
        });
    }
}

#[derive(Debug)]
struct RevocationCheckingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Revocations,
}

impl ClientCertVerifier for RevocationCheckingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    // As the inner verifier decides: mandatory on the federation port, optional for TAXII.
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.revocations.check_chain(end_entity, intermediates)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct RevocationCheckingServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    revocations: Revocations,
}

impl ServerCertVerifier for RevocationCheckingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        self.revocations.check_chain(end_entity, intermediates)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the API layer learns about a connection: its verified identity.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub identity: Arc<PeerIdentity>,
    /// Negotiated key-exchange group, e.g. "X25519MLKEM768".
    pub kx_group: String,
    /// The peer's leaf certificate (DER), already verified.
    pub cert_der: Arc<Vec<u8>>,
}

/// A server-side TLS connection with its identity, for tonic.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
    // Held for the connection's life: bounds concurrent connections.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn kx_name(group: Option<&'static dyn rustls::crypto::SupportedKxGroup>) -> String {
    group
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_else(|| "none".to_string())
}

/// Accept TCP connections, complete the TLS handshake (bounded by
/// `handshake_timeout`) and derive each peer's identity; yields only
/// verified connections. Failures are logged at `warn` and dropped.
/// How [`incoming`] treats connections.
pub struct AcceptRules {
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    /// `[tls] allow_classical_kx`: accept nodes without X25519MLKEM768.
    pub allow_classical_kx: bool,
    /// Where handshakes are counted ([`crate::metrics::TLS_HANDSHAKES`]).
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn incoming(
    listener: TcpListener,
    identity: TlsIdentity,
    server_config: Arc<rustls::ServerConfig>,
    rules: AcceptRules,
    tasks: &crate::tasks::Tasks,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>> {
    let AcceptRules {
        handshake_timeout,
        max_connections,
        allow_classical_kx,
        metrics,
    } = rules;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(server_config);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let handshakes = tasks.clone();
    tasks.spawn(
        tracing::info_span!("accept"),
        async move {
            loop {
                let (tcp, remote) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => break,
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    warn!(remote = %remote, "connection limit reached; refusing connection");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let identity = identity.clone();
                let tx = tx.clone();
                let metrics = metrics.clone();
                handshakes.spawn(
                    tracing::debug_span!("handshake", remote = %remote),
                    async move {
                        let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                warn!(error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                warn!("TLS handshake timed out");
                                return;
                            }
                        };
                        let (_, conn) = tls.get_ref();
                        let kx_group = kx_name(conn.negotiated_key_exchange_group());
                        let chain: Vec<CertificateDer<'static>> = conn
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let peer = match pki::identity_from_chain(&chain, &identity.root_der) {
                            Ok(p) => p,
                            Err(e) => {
                                warn!(error = %e, "peer certificate verified but carries no usable identity; closing");
                                return;
                            }
                        };
                        let kind = match &peer {
                            PeerIdentity::Node { .. } => "node",
                            PeerIdentity::User { .. } => "user",
                        };
                        if classical_node_refused(&peer, &kx_group, allow_classical_kx) {
                            metrics.inc(crate::metrics::TLS_HANDSHAKES, &[("listener", "node"), ("kx_group", &kx_group), ("peer", kind), ("outcome", "refused")]);
                            warn!(
                                peer = ?peer, tls.kx = %kx_group,
                                "refused a node whose TLS offered no post-quantum key exchange: links between nodes use \
                                 {PQ_KX_GROUP} (set [tls] allow_classical_kx = true on this node to accept it)"
                            );
                            return;
                        }
                        if kind == "node" && kx_group != PQ_KX_GROUP {
                            warn!(peer = ?peer, tls.kx = %kx_group, "node link with classical key exchange (allowed by [tls] allow_classical_kx)");
                        }
                        metrics.inc(crate::metrics::TLS_HANDSHAKES, &[("listener", "node"), ("kx_group", &kx_group), ("peer", kind), ("outcome", "accepted")]);
                        debug!(peer = ?peer, tls.kx = %kx_group, "connection accepted");
                        let cert_der = Arc::new(chain.first().map(|c| c.to_vec()).unwrap_or_default());
                        let conn = TlsConn {
                            inner: tls,
                            info: ConnInfo {
                                remote,
                                identity: Arc::new(peer),
                                kx_group,
                                cert_der,
                            },
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    },
                );
            }
        },
    );
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What an outgoing connection learned during its handshake.
#[derive(Debug, Clone, Default)]
pub struct LinkInfo {
    pub kx_group: String,
    pub peer: Option<PeerIdentity>,
    /// The peer's verified leaf certificate (DER).
    pub cert_der: Vec<u8>,
}

/// A lazily connecting gRPC channel to `endpoint` (`https://HOST:PORT`) over
/// our own TLS (tonic's client sees `http://`, as TLS is done here).
/// When `expect_org` is set, a server whose certificate names another
/// organisation is refused. Each handshake's result is written to `link`.
pub fn channel(
    endpoint: &str,
    client_config: Arc<rustls::ClientConfig>,
    root_der: CertificateDer<'static>,
    expect_org: Option<String>,
    link: Arc<Mutex<LinkInfo>>,
    connect_timeout: Duration,
    keepalive: Duration,
) -> Result<tonic::transport::Channel, String> {
    let (host, port) = crate::config::parse_endpoint(endpoint)?;
    let uri = format!("http://{host}:{port}");
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| format!("endpoint host {host:?}: {e}"))?
        .to_owned();
    let connector = TlsConnector::from(client_config);
    let ep = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        // A link whose pings go unanswered for twice the interval is dropped, failing the
        // calls on it, so a stalled connection is never waited on for long.
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive * 2)
        .keep_alive_while_idle(true);
    let svc = tower::service_fn(move |_uri: http_uri::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let host = host.clone();
        let link = link.clone();
        let root_der = root_der.clone();
        let expect_org = expect_org.clone();
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(server_name, tcp).await?;
            let (_, conn) = tls.get_ref();
            let kx_group = kx_name(conn.negotiated_key_exchange_group());
            let chain: Vec<CertificateDer<'static>> = conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let peer = pki::identity_from_chain(&chain, &root_der).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string())
            })?;
            if let Some(want) = &expect_org {
                let got = match &peer {
                    PeerIdentity::Node { profile, .. } => profile.org.as_str(),
                    PeerIdentity::User { .. } => "",
                };
                if got != want {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "endpoint presented a certificate for {got:?}, expected node of {want:?}"
                        ),
                    ));
                }
            }
            if let Ok(mut l) = link.lock() {
                *l = LinkInfo {
                    kx_group,
                    peer: Some(peer),
                    cert_der: chain.first().map(|c| c.to_vec()).unwrap_or_default(),
                };
            }
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(ep.connect_with_connector_lazy(svc))
}

mod http_uri {
    pub use tonic::codegen::http::Uri;
}
