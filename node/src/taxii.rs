//! The TAXII 2.1 server: every node can serve its organisation's feed to the tools CSIRTs
//! run (MISP and OpenCTI TAXII feed readers, SIEM connectors, the OASIS `taxii2-client`),
//! on its own HTTPS listener (`[taxii]` in node.toml, off by default).
//!
//! - TLS 1.3 only. A client certificate is optional: a user certificate of this
//!   organisation authenticates, otherwise a per-user API token (`Authorization: Bearer`, or
//!   `Token`, or HTTP Basic with the user name and the token as password, see
//!   [`crate::tokens`]).
//!   Key exchange prefers X25519MLKEM768 and falls back to X25519 / P-256 for TLS stacks
//!   without ML-KEM (OpenSSL 3.0, Python's `ssl`); each connection's group is logged.
//! - Collections: one per cluster this organisation is a member of, and `federation` for
//!   what was published without a cluster. What a caller sees is exactly its node's feed
//!   (what routing delivered to the organisation, retracted messages gone, markings in
//!   force), in the STIX form of [`crate::stix::export`].
//! - `POST objects` publishes as the caller, signed by the node and routed by the same rules
//!   as `bluewire import stix` ([`crate::intel::import`]); the answer is a status resource.
//! - Pagination is by position in the store (`next`), so a page boundary never moves while
//!   messages keep arriving; `added_after` compares with the time this node stored each
//!   message.
//!
//! Never serves a message the feed would not show, and never publishes under another name.

mod objects;
pub mod query;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bluewire_proto::v1 as pb;
use http_body_util::BodyExt;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::pki::{PeerIdentity, UserRole};
use crate::state::NodeState;
use crate::stix;
use objects::Collection;
use query::Query;

/// The TAXII media type of every answer (and of posted envelopes).
pub const TAXII_MEDIA: &str = "application/taxii+json;version=2.1";
/// The media type of the STIX objects served.
pub const STIX_MEDIA: &str = "application/stix+json;version=2.1";
/// Largest POST body (advertised as the API root's `max_content_length`).
pub const MAX_CONTENT_LENGTH: usize = 10 * 1024 * 1024;
/// Status resources kept for `GET status/{id}` (oldest dropped first).
const KEEP_STATUSES: usize = 10_000;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is asking: a user of this organisation, from its certificate or a token.
#[derive(Debug, Clone)]
struct Caller {
    user: String,
    role: UserRole,
}

/// What one TLS connection proved.
struct Conn {
    identity: Option<PeerIdentity>,
    remote: SocketAddr,
}

/// Pages read at once (each on a blocking thread).
const MAX_SCANS: usize = 4;
/// Longest a client may take to send a POST body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's state beside the node's: status resources of earlier posts, and the bounds
/// on concurrent scans.
struct Taxii {
    st: Arc<NodeState>,
    statuses: Mutex<VecDeque<(String, String, Value)>>,
    scans: tokio::sync::Semaphore,
}

/// Serve TAXII 2.1 on `listener` until the node stops.
pub fn serve(st: Arc<NodeState>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let srv = Arc::new(Taxii {
        st: st.clone(),
        statuses: Mutex::new(VecDeque::new()),
        scans: tokio::sync::Semaphore::new(MAX_SCANS),
    });
    // As many connections as the federation listener allows; more wait in the kernel's
    // backlog instead of costing a task each.
    let permits = Arc::new(tokio::sync::Semaphore::new(
        st.config.limits.max_connections.max(1),
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tasks = st.tasks.clone();
    let conns = tasks.clone();
    let handshake = Duration::from_millis(st.config.limits.handshake_timeout_ms);
    let stopping = tasks.stopping();
    tasks.spawn(tracing::info_span!("taxii"), async move {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = stopping.cancelled() => break,
            };
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "TAXII accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stopping.cancelled() => break,
            };
            let acceptor = acceptor.clone();
            let srv = srv.clone();
            conns.spawn(
                tracing::debug_span!("taxii-conn", remote = %remote),
                async move {
                    let _permit = permit;
                    let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            debug!(error = %e, "TAXII TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    };
                    let (_, session) = tls.get_ref();
                    let kx = session
                        .negotiated_key_exchange_group()
                        .map(|g| format!("{:?}", g.name()))
                        .unwrap_or_default();
                    let chain: Vec<CertificateDer<'static>> = session
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default();
                    let identity = if chain.is_empty() {
                        None
                    } else {
                        match crate::pki::identity_from_chain(&chain, &srv.st.tls.root_der) {
                            Ok(id) => Some(id),
                            Err(e) => {
                                warn!(error = %e, "TAXII client certificate carries no usable identity; closing");
                                return;
                            }
                        }
                    };
                    let kind = match &identity {
                        Some(crate::pki::PeerIdentity::Node { .. }) => "node",
                        Some(crate::pki::PeerIdentity::User { .. }) => "user",
                        None => "none",
                    };
                    srv.st.metrics.inc(
                        crate::metrics::TLS_HANDSHAKES,
                        &[("listener", "taxii"), ("kx_group", &kx), ("peer", kind), ("outcome", "accepted")],
                    );
                    debug!(tls.kx = %kx, client_cert = identity.is_some(), "TAXII connection");
                    let conn = Arc::new(Conn { identity, remote });
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let srv = srv.clone();
                        let conn = conn.clone();
                        async move { Ok::<_, Infallible>(srv.handle(&conn, req).await) }
                    });
                    let mut http = http1::Builder::new();
                    http.timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT);
                    if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
                        debug!(error = %e, "TAXII connection ended with an error");
                    }
                },
            );
        }
    });
}

/// A TAXII error message (section 3.6.1).
fn error(status: StatusCode, title: &str, description: impl Into<String>) -> Response<String> {
    let body = json!({
        "title": title,
        "description": description.into(),
        "http_status": status.as_u16().to_string(),
    });
    respond(status, body)
}

/// Why a request is refused, before it becomes a response.
struct Refusal {
    status: StatusCode,
    title: &'static str,
    description: String,
}

impl Refusal {
    fn forbidden(title: &'static str, description: String) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            title,
            description,
        }
    }

    /// The error message; a 401 names the schemes the server takes.
    fn response(self) -> Response<String> {
        let mut r = error(self.status, self.title, self.description);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Basic realm=\"bluewire-taxii\", Bearer realm=\"bluewire-taxii\"",
                ),
            );
        }
        r
    }
}

fn respond(status: StatusCode, body: Value) -> Response<String> {
    let mut r = Response::new(body.to_string());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TAXII_MEDIA));
    r
}

/// Whether an Accept header takes TAXII 2.1 JSON.
fn accepts_taxii(accept: Option<&HeaderValue>) -> bool {
    let Some(a) = accept.and_then(|a| a.to_str().ok()) else {
        return true;
    };
    a.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let version = params
            .find_map(|p| p.strip_prefix("version="))
            .map(str::to_string);
        match media.as_str() {
            "*/*" | "application/*" => true,
            "application/taxii+json" => version.is_none_or(|v| v == "2.1"),
            _ => false,
        }
    })
}

fn is_taxii_content(ct: Option<&HeaderValue>) -> bool {
    ct.and_then(|c| c.to_str().ok()).is_some_and(|c| {
        let mut params = c.split(';').map(str::trim);
        params
            .next()
            .is_some_and(|m| m.eq_ignore_ascii_case("application/taxii+json"))
            && params
                .find_map(|p| p.strip_prefix("version="))
                .is_none_or(|v| v == "2.1")
    })
}

impl Taxii {
    /// Answer one request. A refused request with a body may leave it unread, and hyper then
    /// closes the connection: such answers say `Connection: close`, so a client does not send
    /// its next request on a connection that is going away.
    async fn handle(&self, conn: &Conn, req: Request<hyper::body::Incoming>) -> Response<String> {
        let has_body = req.method() == Method::POST;
        let mut r = self.route(conn, req).await;
        if has_body && !r.status().is_success() {
            r.headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }

    async fn route(&self, conn: &Conn, req: Request<hyper::body::Incoming>) -> Response<String> {
        let caller = match self.authenticate(conn, &req) {
            Ok(c) => c,
            Err(r) => return r.response(),
        };
        if !self.st.client_limits.try_take(&caller.user) {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                format!(
                    "{} is over its rate limit on this node ({} requests per second, limits.client_rate_per_sec); slow down and retry",
                    caller.user,
                    self.st.client_limits.rate()
                ),
            );
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if !accepts_taxii(req.headers().get(ACCEPT)) {
            return error(
                StatusCode::NOT_ACCEPTABLE,
                "Not acceptable",
                format!("this server answers {TAXII_MEDIA}: send Accept: {TAXII_MEDIA}"),
            );
        }
        let query = req.uri().query().map(str::to_string);
        debug!(user = %caller.user, remote = %conn.remote, %method, %path, "TAXII request");
        match (&method, segments.as_slice()) {
            (&Method::GET, ["taxii2"]) => self.discovery(&req),
            (&Method::GET, ["api"]) => respond(
                StatusCode::OK,
                json!({
                    "title": self.st.config.taxii.title,
                    "description": format!("The STIX 2.1 feed {} receives through Bluewire: one collection per cluster it is a member of, and the federation-wide feed.", self.st.org()),
                    "versions": [TAXII_MEDIA],
                    "max_content_length": MAX_CONTENT_LENGTH,
                }),
            ),
            (&Method::GET, ["api", "collections"]) => {
                let list: Vec<Value> = self
                    .collections()
                    .iter()
                    .map(Collection::resource)
                    .collect();
                if list.is_empty() {
                    respond(StatusCode::OK, json!({}))
                } else {
                    respond(StatusCode::OK, json!({ "collections": list }))
                }
            }
            (_, ["api", "collections", cid, rest @ ..]) => {
                let Some(coll) = self.collections().into_iter().find(|c| c.id == *cid) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "Unknown collection",
                        format!(
                            "no collection {cid} here: GET /api/collections/ lists the ones you may read"
                        ),
                    );
                };
                self.collection(&caller, &coll, &method, rest, query.as_deref(), req)
                    .await
            }
            (&Method::GET, ["api", "status", sid]) => self.status(&caller, sid),
            (_, ["taxii2"] | ["api"] | ["api", "collections"] | ["api", "status", _]) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                format!("{method} is not served on {path}"),
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("{path} is not a TAXII 2.1 endpoint of this server: start at /taxii2/"),
            ),
        }
    }

    /// The caller from its certificate, else from a token; 401 or 403 with the reason.
    fn authenticate<B>(&self, conn: &Conn, req: &Request<B>) -> Result<Caller, Refusal> {
        let st = &self.st;
        if let Some(id) = &conn.identity {
            if st.tls.revocations.identity_revoked(id) {
                return Err(Refusal::forbidden(
                    "Certificate revoked",
                    "your certificate has been revoked by the federation CA".into(),
                ));
            }
            return match id {
                PeerIdentity::User {
                    org, name, role, ..
                } if org == st.org() => Ok(Caller {
                    user: name.clone(),
                    role: *role,
                }),
                PeerIdentity::User { org, .. } => Err(Refusal::forbidden(
                    "Wrong organisation",
                    format!(
                        "this server serves users of {}; your certificate is from {org}",
                        st.org()
                    ),
                )),
                PeerIdentity::Node { profile, .. } => Err(Refusal::forbidden(
                    "Not a user",
                    format!(
                        "node {} cannot use TAXII: use a user certificate or token",
                        profile.org
                    ),
                )),
            };
        }
        let unauthorized = |why: String| Refusal {
            status: StatusCode::UNAUTHORIZED,
            title: "Authentication required",
            description: why,
        };
        let Some(header) = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
        else {
            return Err(unauthorized(
                "present a user certificate of this organisation, or a token (bluewire token create): Authorization: Bearer TOKEN, or HTTP Basic with the user name and the token as password".into(),
            ));
        };
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let (claimed, token) = match scheme.to_ascii_lowercase().as_str() {
            // `Token` is what taxii2-client's TokenAuth sends.
            "bearer" | "token" => (None, value.trim().to_string()),
            "basic" => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or_else(|| {
                        unauthorized("the Basic credentials are not base64 of USER:TOKEN".into())
                    })?;
                let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                    unauthorized("the Basic credentials are not USER:TOKEN".into())
                })?;
                (Some(user.to_string()), pass.to_string())
            }
            _ => {
                return Err(unauthorized(format!(
                    "the {scheme} authorization scheme is not supported: use Bearer (or Token) or Basic"
                )));
            }
        };
        let t = crate::tokens::authenticate(&st.store, &token, crate::clock::now_ms()).map_err(
            |e| match e {
                crate::tokens::TokenError::Store(_) | crate::tokens::TokenError::Corrupt { .. } => {
                    warn!(error = %e, remote = %conn.remote, "TAXII: token lookup failed");
                    Refusal {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        title: "Unavailable",
                        description: "the node cannot check tokens right now; try again later"
                            .into(),
                    }
                }
                e => {
                    warn!(error = %e, remote = %conn.remote, "TAXII: token refused");
                    unauthorized(e.to_string())
                }
            },
        )?;
        if let Some(user) = claimed
            && user != t.user
        {
            return Err(unauthorized(format!(
                "the token is {}'s, not {user}'s: give the token's user name",
                t.user
            )));
        }
        Ok(Caller {
            user: t.user,
            role: t.role,
        })
    }

    fn discovery<B>(&self, req: &Request<B>) -> Response<String> {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| {
                self.st
                    .taxii_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            });
        let root = format!("https://{host}/api/");
        respond(
            StatusCode::OK,
            json!({
                "title": format!("Bluewire node of {}", self.st.org()),
                "description": "TAXII 2.1 over the organisation's Bluewire feed",
                "default": root,
                "api_roots": [root],
            }),
        )
    }

    /// The collections this organisation may read: its clusters, and the federation feed.
    fn collections(&self) -> Vec<Collection> {
        let me = self.st.org();
        let mut orgs: Vec<String> = std::iter::once(me.to_string())
            .chain(self.st.config.peers.iter().map(|p| p.org.clone()))
            .collect();
        orgs.sort();
        orgs.dedup();
        let mut out = vec![Collection::federation(orgs)];
        let mut clusters: Vec<Collection> = self
            .st
            .clusters
            .iter()
            .filter(|c| c.is_member(me))
            .map(|c| Collection::of_cluster(&c, me))
            .collect();
        clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        out.extend(clusters);
        out
    }

    async fn collection(
        &self,
        caller: &Caller,
        coll: &Collection,
        method: &Method,
        rest: &[&str],
        query: Option<&str>,
        req: Request<hyper::body::Incoming>,
    ) -> Response<String> {
        let page_size = self.st.config.taxii.page_size;
        let bad = |e: String| error(StatusCode::BAD_REQUEST, "Bad query", e);
        match (method, rest) {
            (&Method::GET, []) => respond(StatusCode::OK, coll.resource()),
            (&Method::GET, ["objects"]) => {
                match query::parse(query, query::OBJECT_PARAMS, page_size, page_size) {
                    Ok(q) => self.objects(coll, &q, false).await,
                    Err(e) => bad(e),
                }
            }
            (&Method::GET, ["manifest"]) => {
                match query::parse(query, query::OBJECT_PARAMS, page_size, page_size) {
                    Ok(q) => self.objects(coll, &q, true).await,
                    Err(e) => bad(e),
                }
            }
            (&Method::GET, ["objects", oid]) => {
                let allowed = &[
                    "added_after",
                    "limit",
                    "next",
                    "match[version]",
                    "match[spec_version]",
                ];
                match query::parse(query, allowed, page_size, page_size) {
                    Ok(mut q) => {
                        q.ids = vec![oid.to_string()];
                        self.object(coll, &q, oid, false).await
                    }
                    Err(e) => bad(e),
                }
            }
            (&Method::GET, ["objects", oid, "versions"]) => {
                let allowed = &["added_after", "limit", "next", "match[spec_version]"];
                match query::parse(query, allowed, page_size, page_size) {
                    Ok(mut q) => {
                        q.ids = vec![oid.to_string()];
                        q.versions = query::Versions::All;
                        self.object(coll, &q, oid, true).await
                    }
                    Err(e) => bad(e),
                }
            }
            (&Method::POST, ["objects"]) => self.post(caller, coll, req).await,
            (&Method::DELETE, ["objects", _]) => error(
                StatusCode::FORBIDDEN,
                "Not deletable",
                "objects are signed messages: the origin retracts a message with bluewire retract, and it leaves every feed",
            ),
            (_, [] | ["objects"] | ["manifest"] | ["objects", _] | ["objects", _, "versions"]) => {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                    format!("{method} is not served here"),
                )
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "Not found",
                "not a TAXII 2.1 collection endpoint: objects/, objects/{id}/, objects/{id}/versions/, manifest/",
            ),
        }
    }

    /// A page, read off the async workers (it decodes messages), at most
    /// [`MAX_SCANS`] at once.
    async fn page(&self, coll: &Collection, q: &Query) -> Result<objects::Page, Refusal> {
        let busy = |why: String| Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Busy",
            description: why,
        };
        let _permit = self
            .scans
            .acquire()
            .await
            .map_err(|_| busy("the node is stopping".into()))?;
        let (st, coll, q) = (self.st.clone(), coll.clone(), q.clone());
        tokio::task::spawn_blocking(move || objects::page(&st, &coll, &q))
            .await
            .map_err(|e| busy(format!("the page was not read: {e}")))?
            .map_err(|e| {
                warn!(error = %e, "TAXII: reading the store failed");
                Refusal {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    title: "Store error",
                    description:
                        "the node could not read its store; the operator finds the cause in its log"
                            .into(),
                }
            })
    }

    /// `objects` (an envelope) or `manifest`.
    async fn objects(&self, coll: &Collection, q: &Query, manifest: bool) -> Response<String> {
        let page = match self.page(coll, q).await {
            Ok(p) => p,
            Err(r) => return r.response(),
        };
        let mut body = json!({ "more": page.more });
        if let Some(next) = page.next {
            body["next"] = next.token().into();
        }
        if !page.entries.is_empty() {
            let items: Vec<Value> = page
                .entries
                .iter()
                .map(|e| {
                    if manifest {
                        e.manifest()
                    } else {
                        e.object.clone()
                    }
                })
                .collect();
            body["objects"] = items.into();
        }
        with_dates(respond(StatusCode::OK, body), &page)
    }

    /// `objects/{id}` (an envelope) or `objects/{id}/versions` (a versions resource): 404
    /// when the collection holds nothing of it.
    async fn object(
        &self,
        coll: &Collection,
        q: &Query,
        oid: &str,
        versions: bool,
    ) -> Response<String> {
        let page = match self.page(coll, q).await {
            Ok(p) => p,
            Err(r) => return r.response(),
        };
        if page.entries.is_empty() && !page.more {
            return error(
                StatusCode::NOT_FOUND,
                "Unknown object",
                format!("no object {oid} (at the versions asked for) in this collection"),
            );
        }
        let mut body = if versions {
            json!({
                "more": page.more,
                "versions": page.entries.iter().map(|e| e.version()).collect::<Vec<_>>(),
            })
        } else {
            json!({
                "more": page.more,
                "objects": page.entries.iter().map(|e| e.object.clone()).collect::<Vec<_>>(),
            })
        };
        if let Some(next) = page.next {
            body["next"] = next.token().into();
        }
        with_dates(respond(StatusCode::OK, body), &page)
    }

    /// `POST objects`: publish as the caller, grouped by TLP (an object without a TLP
    /// marking takes `[taxii] default_tlp`), through the same path as `bluewire import stix`.
    async fn post(
        &self,
        caller: &Caller,
        coll: &Collection,
        req: Request<hyper::body::Incoming>,
    ) -> Response<String> {
        if !is_taxii_content(req.headers().get(CONTENT_TYPE)) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                format!("post a TAXII envelope with Content-Type: {TAXII_MEDIA}"),
            );
        }
        if !coll.can_write {
            return error(
                StatusCode::FORBIDDEN,
                "Read-only collection",
                format!(
                    "{} is an observer in {}: observers read, they do not post",
                    self.st.org(),
                    coll.cluster
                ),
            );
        }
        let body = http_body_util::Limited::new(req.into_body(), MAX_CONTENT_LENGTH).collect();
        let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
            Ok(Ok(b)) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "Too slow",
                    format!(
                        "the body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                );
            }
            Ok(Err(_)) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Too large",
                    format!("a post is at most {MAX_CONTENT_LENGTH} bytes: split it"),
                );
            }
        };
        let envelope: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Not an envelope",
                    format!("the body is not JSON: {e}"),
                );
            }
        };
        let Some(objects) = envelope
            .get("objects")
            .and_then(Value::as_array)
            .filter(|o| !o.is_empty())
        else {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not an envelope",
                "a TAXII envelope is {\"objects\": [STIX objects…]} with at least one object",
            );
        };
        let default_tlp = self.st.config.taxii.default_tlp;
        // One import per TLP, so no object is marked down (import splits further: stricter
        // granular markings, 1,000 objects and 640 KiB per message).
        let mut groups: std::collections::BTreeMap<i32, Vec<Value>> = Default::default();
        for o in objects {
            let tlp = o
                .as_object()
                .and_then(stix::object_tlp)
                .unwrap_or(default_tlp);
            groups.entry(tlp as i32).or_default().push(o.clone());
        }
        let (mut successes, mut failures) = (Vec::new(), Vec::new());
        let ident = |o: &Value| {
            json!({
                "id": o.get("id").and_then(Value::as_str).unwrap_or(""),
                "version": stix::version_of(o),
            })
        };
        // A reason names the object's pattern at most once, briefly.
        let brief = |why: &str| why.chars().take(400).collect::<String>();
        for (tlp, group) in groups {
            for chunk in group.chunks(stix::MAX_OBJECTS) {
                let bundle = json!({
                    "type": "bundle",
                    "id": format!("bundle--{}", uuid::Builder::from_random_bytes(rand::random()).into_uuid()),
                    "objects": chunk,
                });
                let r = crate::intel::import(
                    &self.st,
                    &caller.user,
                    pb::ImportStixRequest {
                        bundle: bundle.to_string(),
                        level: pb::Level::Technical as i32,
                        marking: Some(pb::Marking {
                            tlp,
                            classification: String::new(),
                            exercise: coll.exercise,
                        }),
                        cluster: coll.cluster.clone(),
                        recipients: Vec::new(),
                        no_reshare: false,
                    },
                )
                .await;
                match r {
                    Ok(r) => {
                        let refused: std::collections::HashMap<usize, &str> = r
                            .refused
                            .iter()
                            .map(|x| (x.index as usize, x.reason.as_str()))
                            .collect();
                        for (i, o) in chunk.iter().enumerate() {
                            match refused.get(&i) {
                                Some(why) => {
                                    let mut f = ident(o);
                                    f["message"] = brief(why).into();
                                    failures.push(f);
                                }
                                None => successes.push(ident(o)),
                            }
                        }
                    }
                    Err(e) => {
                        let why = brief(&e.to_string());
                        for o in chunk {
                            let mut f = ident(o);
                            f["message"] = why.clone().into();
                            failures.push(f);
                        }
                    }
                }
            }
        }
        let id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string();
        let mut status = json!({
            "id": id,
            "status": "complete",
            "request_timestamp": stix::export::timestamp(crate::clock::now_ms()),
            "total_count": successes.len() + failures.len(),
            "success_count": successes.len(),
            "failure_count": failures.len(),
            "pending_count": 0,
        });
        if !successes.is_empty() {
            status["successes"] = successes.into();
        }
        if !failures.is_empty() {
            status["failures"] = failures.into();
        }
        info!(user = %caller.user, role = %caller.role, collection = %coll.id, status.id = %id, "TAXII post");
        if let Ok(mut s) = self.statuses.lock() {
            if s.len() >= KEEP_STATUSES {
                s.pop_front();
            }
            s.push_back((id, caller.user.clone(), status.clone()));
        }
        respond(StatusCode::ACCEPTED, status)
    }

    /// A status resource, for the user who posted (another user gets a 404).
    fn status(&self, caller: &Caller, sid: &str) -> Response<String> {
        let found = self.statuses.lock().ok().and_then(|s| {
            s.iter()
                .find(|(id, user, _)| id == sid && *user == caller.user)
                .map(|(.., v)| v.clone())
        });
        match found {
            Some(v) => respond(StatusCode::OK, v),
            None => error(
                StatusCode::NOT_FOUND,
                "Unknown status",
                format!(
                    "no status {sid}: statuses are kept in memory for the last {KEEP_STATUSES} posts since the node started"
                ),
            ),
        }
    }
}

/// `X-TAXII-Date-Added-First` / `-Last` of a page.
fn with_dates(mut r: Response<String>, page: &objects::Page) -> Response<String> {
    if let (Some(first), Some(last)) = (page.entries.first(), page.entries.last()) {
        for (name, ms) in [
            ("X-TAXII-Date-Added-First", first.date_added_ms),
            ("X-TAXII-Date-Added-Last", last.date_added_ms),
        ] {
            if let Ok(v) = HeaderValue::from_str(&stix::export::timestamp(ms)) {
                r.headers_mut().insert(name, v);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_and_content_type_negotiation() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(accepts_taxii(None));
        assert!(accepts_taxii(Some(&h(
            "application/taxii+json;version=2.1"
        ))));
        assert!(accepts_taxii(Some(&h(
            "application/taxii+json; version=2.1"
        ))));
        assert!(accepts_taxii(Some(&h("application/taxii+json"))));
        assert!(accepts_taxii(Some(&h("text/html, */*"))));
        assert!(!accepts_taxii(Some(&h(
            "application/taxii+json;version=2.0"
        ))));
        assert!(!accepts_taxii(Some(&h("application/json"))));
        assert!(!accepts_taxii(Some(&h("text/html"))));
        assert!(is_taxii_content(Some(&h(
            "application/taxii+json;version=2.1"
        ))));
        assert!(is_taxii_content(Some(&h("application/taxii+json"))));
        assert!(!is_taxii_content(Some(&h("application/json"))));
        assert!(!is_taxii_content(Some(&h(
            "application/taxii+json;version=2.0"
        ))));
        assert!(!is_taxii_content(None));
    }

    #[test]
    fn errors_are_taxii_error_messages() {
        let r = error(StatusCode::NOT_FOUND, "Unknown", "why");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[CONTENT_TYPE], TAXII_MEDIA);
        let v: Value = serde_json::from_str(r.body()).expect("json");
        assert_eq!(
            v,
            json!({"title": "Unknown", "description": "why", "http_status": "404"})
        );
    }
}
