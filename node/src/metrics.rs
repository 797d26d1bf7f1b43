//! The node's counters and gauges, rendered in the Prometheus text exposition format 0.0.4
//! (served by `Admin.Metrics` and `bluewire metrics`).
//!
//! Owns: named counters and gauges with label sets, created on first use. Cheap on the hot
//! path (a concurrent map lookup and an atomic add) and safe to share (`Arc<Metrics>`).
//!
//! Counters in use (others may be added freely; a name is either a counter or a gauge):
//! - `bluewire_routing_decisions_total{direction,rule,outcome}`: allow/deny per rule.
//! - `bluewire_messages_published_total`, `bluewire_messages_received_total`.
//! - `bluewire_envelopes_rejected_total{reason}`, `bluewire_deliveries_total{peer}`.
//! - `bluewire_subscribers` (gauge), `bluewire_slow_subscribers_disconnected_total`.
//!
//! Also owns the plain-HTTP scrape endpoint ([`serve_http`], on hyper): `GET /metrics` and
//! nothing else, on the loopback listener the caller bound (the config refuses any other
//! address), one request per connection, until shutdown.
//!
//! It must never: panic on odd names or label values (invalid name characters become `_`,
//! label values are escaped), render two families with the same name, or serve anything on
//! the HTTP endpoint but the rendered metrics (every other method or path is a 404).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Routing decisions: `direction` "egress"|"ingress", `rule`, `outcome` "allow"|"deny".
pub const ROUTING_DECISIONS: &str = "bluewire_routing_decisions_total";
pub const MESSAGES_PUBLISHED: &str = "bluewire_messages_published_total";
pub const MESSAGES_RECEIVED: &str = "bluewire_messages_received_total";
/// Labels `peer` and `rule` (the check that refused it).
pub const ENVELOPES_REJECTED: &str = "bluewire_envelopes_rejected_total";
/// Label `peer`.
pub const DELIVERIES: &str = "bluewire_deliveries_total";
/// Label `to`: envelopes this node took on to carry to another member (relay).
pub const RELAYED: &str = "bluewire_relayed_total";
/// Label `via`: own envelopes another member took on while the direct link was down.
pub const SENT_VIA_RELAY: &str = "bluewire_sent_via_relay_total";
/// Calls or envelopes deferred by a rate limit. Labels `kind` ("peer"|"client") and `who`.
pub const RATE_LIMITED: &str = "bluewire_rate_limited_total";
/// Write transactions the store has committed (a group commit counts once).
pub const STORE_COMMITS: &str = "bluewire_store_commits_total";
/// Of those, committed by an insert's caller itself rather than by the store's writer thread.
pub const STORE_COMMITS_BY_CALLER: &str = "bluewire_store_commits_by_caller_total";
/// Batch signatures this node has made for its own publishes (each covers the messages
/// published together: messages published per signature is the batch size).
pub const SIGNATURES_MADE: &str = "bluewire_signatures_made_total";
/// Gauge: seconds between syncs of the store file (`[store] sync = "interval"`); 0 when every
/// commit is synced before it is acknowledged (the default).
pub const STORE_SYNC_INTERVAL: &str = "bluewire_store_sync_interval_seconds";
/// TLS handshakes completed, by `listener` ("node"|"taxii"), `kx_group` and `peer`
/// ("node"|"user"|"none") and `outcome` ("accepted"|"refused").
pub const TLS_HANDSHAKES: &str = "bluewire_tls_handshakes_total";

/// Gauge: subscriptions this node is feeding now (`Client.Subscribe` streams).
pub const SUBSCRIBERS: &str = "bluewire_subscribers";
/// Subscribers disconnected because their buffer stayed full too long (`feed.slow_subscriber_ms`).
pub const SLOW_SUBSCRIBERS_DISCONNECTED: &str = "bluewire_slow_subscribers_disconnected_total";

/// Time spent in each stage of the message path, by `stage` ([`Stage`]), in seconds; with
/// [`STAGE_EVENTS`] it gives the mean time per event.
pub const STAGE_SECONDS: &str = "bluewire_stage_seconds_total";
/// Events timed in each stage of the message path, by `stage`.
pub const STAGE_EVENTS: &str = "bluewire_stage_events_total";

/// A stage of the message path, timed on the hot path (an atomic add, no lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Publish: waiting for the signing thread and its batch signature, per message.
    Seal,
    /// Publish: storing the signed message and its outbox entries, per message (queue + commit).
    PublishCommit,
    /// Delivery: one Deliver call to a peer, from sending to its answer, per call.
    DeliverCall,
    /// Ingress: opening and judging a delivered batch (signatures, routing), per call.
    IngressCheck,
    /// Ingress: storing what a delivered batch brought, per call (queue + commit).
    IngressCommit,
    /// Store: one write transaction (apply the group, commit, fsync when durable), per commit.
    StoreCommit,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Seal,
        Stage::PublishCommit,
        Stage::DeliverCall,
        Stage::IngressCheck,
        Stage::IngressCommit,
        Stage::StoreCommit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Seal => "seal",
            Stage::PublishCommit => "publish_commit",
            Stage::DeliverCall => "deliver_call",
            Stage::IngressCheck => "ingress_check",
            Stage::IngressCommit => "ingress_commit",
            Stage::StoreCommit => "store_commit",
        }
    }
}

/// Per stage: nanoseconds and events.
#[derive(Debug, Default)]
struct Stages {
    nanos: [AtomicU64; Stage::ALL.len()],
    events: [AtomicU64; Stage::ALL.len()],
}

/// HELP text of the known families; others get a generic one.
const HELP: &[(&str, &str)] = &[
    (
        STAGE_SECONDS,
        "Time spent in each stage of the message path (seal, publish_commit, deliver_call, ingress_check, ingress_commit, store_commit); divided by bluewire_stage_events_total, the mean per event.",
    ),
    (
        STAGE_EVENTS,
        "Events timed in each stage of the message path: messages (seal, publish_commit), calls (deliver_call, ingress_check, ingress_commit), write transactions (store_commit).",
    ),
    (
        ROUTING_DECISIONS,
        "Routing decisions by direction (egress, ingress), deciding rule and outcome (allow, deny).",
    ),
    (
        MESSAGES_PUBLISHED,
        "Messages published by local members through this node.",
    ),
    (MESSAGES_RECEIVED, "Messages accepted from peer nodes."),
    (
        RATE_LIMITED,
        "Calls refused (RESOURCE_EXHAUSTED) or envelopes deferred (RETRY_LATER) by a rate limit, by kind (peer, client) and identity.",
    ),
    (
        STORE_COMMITS,
        "Write transactions committed by the store (one per group commit, durable or not).",
    ),
    (
        STORE_COMMITS_BY_CALLER,
        "Of the store's write transactions, those an insert's caller committed itself, without \
         the writer thread ([store] sync = \"interval\", while nothing else was being written).",
    ),
    (
        SIGNATURES_MADE,
        "Batch signatures made for this node's own publishes (one per batch; messages published per signature is the batch size).",
    ),
    (
        STORE_SYNC_INTERVAL,
        "Seconds between syncs of the store file to disk (store.sync = \"interval\"); 0: every commit is synced before it is acknowledged.",
    ),
    (
        ENVELOPES_REJECTED,
        "Envelopes refused by this node, by sending peer and refusing rule.",
    ),
    (DELIVERIES, "Messages acknowledged by each peer node."),
    (
        RELAYED,
        "Envelopes this node took on to carry to another member (relay), by recipient.",
    ),
    (
        SENT_VIA_RELAY,
        "Envelopes handed to a relay while the direct link to their recipient was down, by relay.",
    ),
    (
        TLS_HANDSHAKES,
        "TLS handshakes completed, by listener (node, taxii), negotiated key-exchange group, peer kind (node, user, none) and outcome (accepted, refused).",
    ),
    (
        SUBSCRIBERS,
        "Subscriptions (Client.Subscribe streams) this node is feeding now.",
    ),
    (
        SLOW_SUBSCRIBERS_DISCONNECTED,
        "Subscribers disconnected because their buffer stayed full longer than feed.slow_subscriber_ms (told to resume with after_seq).",
    ),
    (
        "bluewire_outbox_depth",
        "Messages queued for each peer node.",
    ),
    (
        "bluewire_audit_records",
        "Records in this node's audit log.",
    ),
    (
        "bluewire_case_items_overdue",
        "Crisis-case items past due on this node (reserve requests: 24 h; NIS2 Article 23 stages), by kind and exercise.",
    ),
];

/// A rendered family: its type and its (labels, value) samples.
type Family = (&'static str, Vec<(Vec<(String, String)>, String)>);

/// A sample's identity: family name and its labels, sorted by label name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    name: String,
    labels: Vec<(String, String)>,
}

impl Key {
    fn new(name: &str, labels: &[(&str, &str)]) -> Key {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        Key {
            name: name.to_owned(),
            labels,
        }
    }
}

/// The node's metrics. `Default` starts empty; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: DashMap<Key, AtomicU64>,
    /// f64 bit patterns.
    gauges: DashMap<Key, AtomicU64>,
    stages: Stages,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts one routing decision:
    /// `bluewire_routing_decisions_total{direction,rule,outcome="allow"|"deny"}`.
    pub fn decision(&self, direction: &str, rule: &str, allowed: bool) {
        self.decisions(direction, rule, allowed, 1);
    }

    /// Counts `n` routing decisions alike at once (a batch's: one counter update, not one
    /// per envelope).
    pub fn decisions(&self, direction: &str, rule: &str, allowed: bool, n: u64) {
        if n == 0 {
            return;
        }
        let outcome = if allowed { "allow" } else { "deny" };
        self.add(
            ROUTING_DECISIONS,
            &[
                ("direction", direction),
                ("rule", rule),
                ("outcome", outcome),
            ],
            n,
        );
    }

    /// Counts `events` in `stage`, which took `took` in all.
    pub fn stage(&self, stage: Stage, took: Duration, events: u64) {
        let i = stage as usize;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.stages.nanos[i].fetch_add(nanos, Ordering::Relaxed);
        self.stages.events[i].fetch_add(events, Ordering::Relaxed);
    }

    /// Sets `stage` to totals kept elsewhere (e.g. by the store's writer).
    pub fn set_stage(&self, stage: Stage, took: Duration, events: u64) {
        let i = stage as usize;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.stages.nanos[i].store(nanos, Ordering::Relaxed);
        self.stages.events[i].store(events, Ordering::Relaxed);
    }

    /// Time and events counted in `stage` so far.
    pub fn stage_value(&self, stage: Stage) -> (Duration, u64) {
        let i = stage as usize;
        (
            Duration::from_nanos(self.stages.nanos[i].load(Ordering::Relaxed)),
            self.stages.events[i].load(Ordering::Relaxed),
        )
    }

    /// Adds 1 to counter `name{labels}`.
    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Adds `n` to counter `name{labels}`.
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], n: u64) {
        let key = Key::new(name, labels);
        if let Some(c) = self.counters.get(&key) {
            c.fetch_add(n, Ordering::Relaxed);
            return;
        }
        self.counters
            .entry(key)
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Sets counter `name{labels}` to `value`, for counts kept elsewhere (e.g. by the store).
    pub fn set_counter(&self, name: &'static str, labels: &[(&str, &str)], value: u64) {
        self.counters
            .entry(Key::new(name, labels))
            .or_default()
            .store(value, Ordering::Relaxed);
    }

    /// Sets gauge `name{labels}` to `value`.
    pub fn gauge(&self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        let key = Key::new(name, labels);
        let bits = value.to_bits();
        if let Some(g) = self.gauges.get(&key) {
            g.store(bits, Ordering::Relaxed);
            return;
        }
        self.gauges
            .entry(key)
            .or_default()
            .store(bits, Ordering::Relaxed);
    }

    /// Adds `delta` (may be negative) to gauge `name{labels}`, starting from 0: for gauges
    /// kept up to date where things start and end (e.g. open subscriptions).
    pub fn gauge_add(&self, name: &'static str, labels: &[(&str, &str)], delta: f64) {
        let add = |g: &AtomicU64| {
            let _ = g.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + delta).to_bits())
            });
        };
        let key = Key::new(name, labels);
        if let Some(g) = self.gauges.get(&key) {
            add(&g);
            return;
        }
        add(&self.gauges.entry(key).or_default());
    }

    /// Current value of counter `name{labels}` (0 if never counted). Label order is irrelevant.
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .get(&Key::new(name, labels))
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Current value of gauge `name{labels}`, if set.
    pub fn gauge_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.gauges
            .get(&Key::new(name, labels))
            .map(|g| f64::from_bits(g.load(Ordering::Relaxed)))
    }

    /// Current count of routing decisions for `direction`/`rule`/`allowed`.
    pub fn decision_count(&self, direction: &str, rule: &str, allowed: bool) -> u64 {
        let outcome = if allowed { "allow" } else { "deny" };
        self.counter_value(
            ROUTING_DECISIONS,
            &[
                ("direction", direction),
                ("rule", rule),
                ("outcome", outcome),
            ],
        )
    }

    /// Everything, in the Prometheus text exposition format 0.0.4: families sorted by name,
    /// each with `# HELP` and `# TYPE` lines, samples sorted by labels, label values escaped.
    pub fn render(&self) -> String {
        // name -> (type, samples). Snapshot first so no map shard is held while formatting.
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        for e in self.counters.iter() {
            let k = e.key();
            let v = e.value().load(Ordering::Relaxed).to_string();
            families
                .entry(metric_name(&k.name))
                .or_insert(("counter", Vec::new()))
                .1
                .push((k.labels.clone(), v));
        }
        for e in self.gauges.iter() {
            let k = e.key();
            let v = format_f64(f64::from_bits(e.value().load(Ordering::Relaxed)));
            let fam = families
                .entry(metric_name(&k.name))
                .or_insert(("gauge", Vec::new()));
            if fam.0 != "gauge" {
                tracing::warn!(name = %k.name, "metric name used as both counter and gauge; gauge not rendered");
                continue;
            }
            fam.1.push((k.labels.clone(), v));
        }
        for stage in Stage::ALL {
            let (took, events) = self.stage_value(stage);
            if events == 0 {
                continue;
            }
            let labels = vec![("stage".to_owned(), stage.label().to_owned())];
            for (name, value) in [
                (STAGE_SECONDS, format_f64(took.as_secs_f64())),
                (STAGE_EVENTS, events.to_string()),
            ] {
                families
                    .entry(name.to_owned())
                    .or_insert(("counter", Vec::new()))
                    .1
                    .push((labels.clone(), value));
            }
        }
        let mut out = String::new();
        for (name, (kind, mut samples)) in families {
            samples.sort();
            let help = HELP
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, h)| (*h).to_owned())
                .unwrap_or_else(|| format!("Bluewire {kind} {name}."));
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                out.push_str(&name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{}=\"{}\"", label_name(k), escape_label(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
}

/// Metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else becomes `_`.
fn metric_name(s: &str) -> String {
    sanitize(s, true)
}

/// Label names: `[a-zA-Z_][a-zA-Z0-9_]*`; anything else becomes `_`.
fn label_name(s: &str) -> String {
    sanitize(s, false)
}

fn sanitize(s: &str, colon: bool) -> String {
    let mut out: String = s
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || (colon && c == ':')
                || (i > 0 && c.is_ascii_digit());
            if ok { c } else { '_' }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Label values: `\` -> `\\`, `"` -> `\"`, newline -> `\n`.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: `\` -> `\\`, newline -> `\n`.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

/// Content type of the Prometheus text exposition format 0.0.4.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Longest a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read (hyper's minimum buffer; a scrape request is a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 8192;

/// Serve `GET /metrics` (Prometheus text format) on a loopback listener until the node stops:
/// then the listener is closed. HTTP/1.1 via hyper, one
/// request per connection (`Connection: close`), request head bounded in size and time.
/// Any other method, path or a query string gets a 404.
pub fn serve_http(
    listener: tokio::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    tasks: &crate::tasks::Tasks,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .keep_alive(false)
        .title_case_headers(true);
    let conns = tasks.clone();
    tasks.spawn(tracing::info_span!("metrics-http"), async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, say: do not spin.
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let render = render.clone();
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = respond(&req, render.as_ref());
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http.serve_connection(TokioIo::new(sock), service);
            conns.spawn(
                tracing::debug_span!("metrics-scrape", client = %peer),
                async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                },
            );
        }
    });
}

/// The answer to one request: the rendered metrics for `GET /metrics`, a 404 otherwise.
fn respond<B>(req: &Request<B>, render: &(dyn Fn() -> String + Send + Sync)) -> Response<String> {
    let metrics = req.method() == Method::GET
        && req.uri().path() == "/metrics"
        && req.uri().query().is_none();
    let (status, content_type, body) = if metrics {
        (StatusCode::OK, PROMETHEUS_CONTENT_TYPE, render())
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /metrics is served here\n".to_string(),
        )
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample line parsed back: name, labels (unescaped), value.
    type Sample = (String, Vec<(String, String)>, String);

    /// A small strict parser for the text format: every line must be a HELP, a TYPE or a
    /// well-formed sample of the family declared just before it.
    fn parse(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut family: Option<String> = None;
        let mut lines = text.lines().peekable();
        assert!(text.is_empty() || text.ends_with('\n'));
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                let ty = lines.next().expect("TYPE after HELP");
                let t = ty
                    .strip_prefix(&format!("# TYPE {name} "))
                    .unwrap_or_else(|| panic!("bad TYPE line {ty:?}"));
                assert!(t == "counter" || t == "gauge", "{t}");
                family = Some(name.to_owned());
                continue;
            }
            let fam = family.as_deref().expect("sample before HELP/TYPE");
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("no value in {line:?}"),
            };
            assert_eq!(name, fam, "sample of another family: {line}");
            let mut labels = Vec::new();
            let value = if let Some(mut r) = rest.strip_prefix('{') {
                loop {
                    let eq = r.find("=\"").expect("label =\"");
                    let lname = &r[..eq];
                    assert!(!lname.is_empty());
                    assert!(lname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    r = &r[eq + 2..];
                    let mut val = String::new();
                    let mut chars = r.char_indices();
                    let end = loop {
                        let (i, c) = chars.next().expect("unterminated label value");
                        match c {
                            '\\' => match chars.next().expect("escape").1 {
                                '\\' => val.push('\\'),
                                '"' => val.push('"'),
                                'n' => val.push('\n'),
                                o => panic!("bad escape \\{o}"),
                            },
                            '"' => break i,
                            '\n' => panic!("raw newline"),
                            c => val.push(c),
                        }
                    };
                    labels.push((lname.to_owned(), val));
                    r = &r[end + 1..];
                    if let Some(x) = r.strip_prefix(',') {
                        r = x;
                    } else {
                        break r.strip_prefix("} ").expect("} then value").to_owned();
                    }
                }
            } else {
                rest.strip_prefix(' ').unwrap().to_owned()
            };
            assert!(
                value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value.as_str()),
                "{value}"
            );
            out.push((name.to_owned(), labels, value));
        }
        out
    }

    #[test]
    fn empty_renders_nothing() {
        assert_eq!(Metrics::new().render(), "");
    }

    #[test]
    fn stages_add_up_and_render_as_seconds_and_events() {
        let m = Metrics::new();
        m.stage(Stage::Seal, Duration::from_micros(1500), 1);
        m.stage(Stage::Seal, Duration::from_micros(500), 3);
        m.stage(Stage::DeliverCall, Duration::from_millis(2), 1);
        assert_eq!(m.stage_value(Stage::Seal), (Duration::from_millis(2), 4));
        assert_eq!(m.stage_value(Stage::IngressCheck), (Duration::ZERO, 0));
        m.set_stage(Stage::StoreCommit, Duration::from_millis(30), 10);
        m.set_stage(Stage::StoreCommit, Duration::from_millis(40), 12);
        assert_eq!(
            m.stage_value(Stage::StoreCommit),
            (Duration::from_millis(40), 12)
        );
        let samples = parse(&m.render());
        let get = |name: &str, stage: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == &vec![("stage".to_string(), stage.to_string())])
                .map(|s| s.2.clone())
        };
        assert_eq!(get(STAGE_SECONDS, "seal").as_deref(), Some("0.002"));
        assert_eq!(get(STAGE_EVENTS, "seal").as_deref(), Some("4"));
        assert_eq!(get(STAGE_SECONDS, "deliver_call").as_deref(), Some("0.002"));
        assert_eq!(get(STAGE_SECONDS, "store_commit").as_deref(), Some("0.04"));
        assert_eq!(get(STAGE_EVENTS, "store_commit").as_deref(), Some("12"));
        // A stage never timed is not rendered.
        assert_eq!(get(STAGE_EVENTS, "ingress_check"), None);
        let labels: Vec<&str> = Stage::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            [
                "seal",
                "publish_commit",
                "deliver_call",
                "ingress_check",
                "ingress_commit",
                "store_commit"
            ]
        );
    }

    #[test]
    fn render_format_is_parseable_and_sorted() {
        let m = Metrics::new();
        m.decision("egress", "tlp", false);
        m.decision("egress", "tlp", false);
        m.decision("egress", "tlp", true);
        m.decision("ingress", "signature", true);
        // A batch's decisions counted at once; none is no series at all.
        m.decisions("ingress", "signature", true, 3);
        m.decisions("ingress", "tlp", false, 0);
        m.inc(MESSAGES_PUBLISHED, &[]);
        m.inc(DELIVERIES, &[("peer", "org-b")]);
        m.add(DELIVERIES, &[("peer", "org-a")], 5);
        m.gauge("bluewire_outbox_depth", &[("peer", "org-b")], 3.0);
        m.gauge("bluewire_custom_ratio", &[], 0.5);
        let text = m.render();
        let samples = parse(&text);
        assert_eq!(samples.len(), 8, "{text}");
        assert!(text.contains(
            "bluewire_routing_decisions_total{direction=\"egress\",outcome=\"deny\",rule=\"tlp\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "bluewire_routing_decisions_total{direction=\"egress\",outcome=\"allow\",rule=\"tlp\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "bluewire_routing_decisions_total{direction=\"ingress\",outcome=\"allow\",rule=\"signature\"} 4\n"
        ), "{text}");
        assert!(
            !text.contains("direction=\"ingress\",outcome=\"deny\""),
            "{text}"
        );
        assert!(text.contains("# TYPE bluewire_routing_decisions_total counter\n"));
        assert!(text.contains("# TYPE bluewire_outbox_depth gauge\n"));
        assert!(text.contains("bluewire_messages_published_total 1\n"));
        assert!(text.contains("bluewire_outbox_depth{peer=\"org-b\"} 3\n"));
        assert!(text.contains("bluewire_custom_ratio 0.5\n"));
        assert!(
            text.contains("# HELP bluewire_custom_ratio Bluewire gauge bluewire_custom_ratio.\n")
        );
        // Families sorted by name, samples by labels.
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let peers: Vec<&str> = samples
            .iter()
            .filter(|s| s.0 == DELIVERIES)
            .map(|s| s.1[0].1.as_str())
            .collect();
        assert_eq!(peers, ["org-a", "org-b"]);
        // Label order at the call site does not matter.
        assert_eq!(m.decision_count("egress", "tlp", false), 2);
        assert_eq!(
            m.counter_value(
                ROUTING_DECISIONS,
                &[
                    ("rule", "tlp"),
                    ("outcome", "allow"),
                    ("direction", "egress")
                ]
            ),
            1
        );
        assert_eq!(m.counter_value(MESSAGES_RECEIVED, &[]), 0);
        assert_eq!(
            m.gauge_value("bluewire_outbox_depth", &[("peer", "org-b")]),
            Some(3.0)
        );
    }

    #[test]
    fn label_values_are_escaped_and_names_sanitized() {
        let m = Metrics::new();
        let nasty = "a\"b\\c\nd}e,f=g é";
        m.inc(ENVELOPES_REJECTED, &[("reason", nasty)]);
        m.inc("bluewire-weird name_total", &[("9bad-label", "x")]);
        m.gauge("bluewire_g", &[], f64::INFINITY);
        m.gauge("bluewire_h", &[], f64::NAN);
        let text = m.render();
        assert!(
            text.contains(r#"bluewire_envelopes_rejected_total{reason="a\"b\\c\nd}e,f=g é"} 1"#),
            "{text}"
        );
        let samples = parse(&text);
        let rejected = samples.iter().find(|s| s.0 == ENVELOPES_REJECTED).unwrap();
        assert_eq!(rejected.1, vec![("reason".to_owned(), nasty.to_owned())]);
        assert!(
            text.contains("bluewire_weird_name_total{_bad_label=\"x\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("bluewire_g +Inf\n"));
        assert!(text.contains("bluewire_h NaN\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 4);
    }

    #[test]
    fn gauges_kept_by_adding_come_back_to_zero() {
        let m = Arc::new(Metrics::new());
        m.gauge_add(SUBSCRIBERS, &[], 0.0);
        assert_eq!(m.gauge_value(SUBSCRIBERS, &[]), Some(0.0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        m.gauge_add(SUBSCRIBERS, &[], 1.0);
                        m.gauge_add(SUBSCRIBERS, &[], -1.0);
                    }
                    m.gauge_add(SUBSCRIBERS, &[], 1.0);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.gauge_value(SUBSCRIBERS, &[]), Some(4.0));
        assert!(
            m.render()
                .contains("# TYPE bluewire_subscribers gauge\nbluewire_subscribers 4\n")
        );
    }

    #[test]
    fn counter_and_gauge_with_one_name_render_one_family() {
        let m = Metrics::new();
        m.inc("bluewire_x", &[]);
        m.gauge("bluewire_x", &[("a", "b")], 2.0);
        let text = m.render();
        assert_eq!(text.matches("# TYPE bluewire_x").count(), 1, "{text}");
        parse(&text);
    }

    #[test]
    fn concurrent_counting_loses_nothing() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let rule = if t % 2 == 0 { "tlp" } else { "level" };
                    for i in 0..5_000 {
                        m.decision("egress", rule, i % 3 != 0);
                        m.inc(MESSAGES_RECEIVED, &[]);
                        if i % 100 == 0 {
                            let _ = m.render();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.counter_value(MESSAGES_RECEIVED, &[]), 40_000);
        let total: u64 = ["tlp", "level"]
            .iter()
            .flat_map(|r| [true, false].map(|a| m.decision_count("egress", r, a)))
            .sum();
        assert_eq!(total, 40_000);
        // 4 threads per rule x 5000, a third denied.
        assert_eq!(m.decision_count("egress", "tlp", false), 4 * 1667);
        let samples = parse(&m.render());
        assert_eq!(samples.len(), 5);
    }

    /// One raw HTTP/1.1 exchange with the endpoint; returns everything it sent back (the
    /// server closes the connection after one response).
    async fn http_get(addr: std::net::SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), sock.read_to_string(&mut out))
            .await
            .expect("the server closes the connection after one response")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn http_endpoint_serves_get_metrics_only_and_stops_on_shutdown() {
        let m = Arc::new(Metrics::new());
        m.inc(MESSAGES_PUBLISHED, &[]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = crate::tasks::Tasks::new();
        let render = m.clone();
        serve_http(listener, Arc::new(move || render.render()), &tasks);

        let ok = http_get(addr, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(ok.contains("\r\nConnection: close\r\n"), "{ok}");
        let (_, body) = ok.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, m.render());
        assert!(
            ok.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{ok}"
        );

        for request in [
            "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET /metrics/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET /metrics?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        ] {
            let r = http_get(addr, request).await;
            assert!(
                r.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{request:?}: {r}"
            );
            assert!(
                r.ends_with("\r\n\r\nonly GET /metrics is served here\n"),
                "{r}"
            );
            assert!(!r.contains("bluewire_"), "{r}");
        }

        tasks.stop();
        tasks
            .drained(Duration::from_secs(10))
            .await
            .expect("the endpoint's tasks end at the stop");
        let closed = async {
            while tokio::net::TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the listener closes on shutdown");
    }
}
