//! `bluewire bench stix`: what STIX costs on top of plain publishing, on a federation of two
//! real node processes on loopback (`pub-a` publishes and serves TAXII, `recv-b` receives),
//! each figure beside a baseline measured in the same run:
//!
//! 1. import: N generated indicators through `ImportStix` in chunks of 1,000 objects (as
//!    `bluewire import stix` sends them), timed until recv-b holds every message; baseline:
//!    free-text messages of the same sizes, published with the same concurrency.
//! 2. TAXII paging of pub-a's `federation` collection over HTTPS (a user certificate, TLS 1.3,
//!    one HTTP/1.1 keep-alive connection); baseline: the same messages read through the gRPC
//!    feed and converted with `stix::export::objects` (as `bluewire export stix` does).
//! 3. fan-out: M stix-bundle messages of ~S bytes vs M free-text messages of the same size.
//!
//! Also, same run: the single-core cost in this process of the steps the nodes' STIX path is
//! made of, on one import chunk (parse, check, serialise, index, export, sign, verify), and
//! the CPU time each node process spent in each phase, to tell what dominates.
//!
//! A benchmark, not a test: it asserts nothing; every wait has a timeout and every loop a
//! count. It never changes what it measures: the nodes run their shipped configuration but
//! for the per-user rate limit and the TAXII listener.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bluewire_node::client::Connection;
use bluewire_node::signing::{self, MESSAGE_CONTEXT, SigningKey};
use bluewire_node::stix;
use bluewire_node::tls::TlsIdentity;
use bluewire_proto::v1 as pb;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, HOST};
use hyper_util::rt::TokioIo;
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_rustls::rustls::pki_types::ServerName;
use tracing::Instrument;

use super::{held, percentile};
use crate::Output;
use crate::local::LocalFederation;

/// Objects per ImportStix request and JSON bytes per request, as `bluewire import stix`
/// chunks (cli/src/intel_cmd.rs `CHUNK_OBJECTS`, `CHUNK_BYTES`).
const CHUNK_OBJECTS: usize = 1_000;
const CHUNK_BYTES: usize = 640 * 1024;
/// `created`, `modified` and `valid_from` of every generated indicator.
const CREATED: &str = "2026-12-01T08:00:00.000Z";
/// Longest a single gRPC call or HTTP request may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Repetitions of each in-process step measurement (the median is kept).
const STEP_REPS: usize = 5;

#[derive(Debug, Args)]
pub struct StixArgs {
    /// Indicators imported in phase 1 (and paged through in phase 2).
    #[arg(long, default_value_t = 100_000)]
    pub indicators: usize,
    /// Objects per ImportStix request (`bluewire import stix` sends 1,000).
    #[arg(long, default_value_t = CHUNK_OBJECTS)]
    pub chunk: usize,
    /// ImportStix requests in flight in phase 1 (and publishes in its baseline).
    #[arg(long, default_value_t = 4)]
    pub import_concurrency: usize,
    /// Messages of each kind in phase 3.
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Size of each phase-3 bundle in bytes (whole indicators, so approximate).
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Publishes in flight in phase 3.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Objects per TAXII page (`limit`; pub-a's `[taxii] page_size` is set to it).
    #[arg(long, default_value_t = 1000)]
    pub page: usize,
    /// Longest wait for delivery at recv-b in phases 1 and 3 (s, each).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Longest the TAXII paging may run (s); it stops after the page in progress.
    #[arg(long, default_value_t = 120)]
    pub taxii_seconds: u64,
    /// Where to build the federation (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// A deterministic RFC 4122 (v4-shaped) UUID from a name space and a counter.
fn uuid_for(space: u64, i: u64) -> uuid::Uuid {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&space.to_be_bytes());
    b[8..].copy_from_slice(&i.to_be_bytes());
    uuid::Builder::from_random_bytes(b).into_uuid()
}

const INDICATOR_SPACE: u64 = 0x626c_7565_7769_7265;
const BUNDLE_SPACE: u64 = 0x626c_7565_6275_6e64;

/// Indicator `i`: an IPv4 address (even `i`, distinct below 2^24) or a domain (odd `i`),
/// marked TLP:GREEN already, so the node's normalisation leaves its bytes as they are.
fn indicator(i: usize) -> Value {
    let green = stix::marking_id(pb::Tlp::Green).unwrap_or_default();
    let (pattern, what) = if i.is_multiple_of(2) {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (i as u32 & 0x00ff_ffff));
        (
            format!("[ipv4-addr:value = '{ip}']"),
            format!("command-and-control address {ip}"),
        )
    } else {
        let d = format!("c2-{i:08}.bench.example");
        (
            format!("[domain-name:value = '{d}']"),
            format!("phishing domain {d}"),
        )
    };
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": format!("indicator--{}", uuid_for(INDICATOR_SPACE, i as u64)),
        "created": CREATED,
        "modified": CREATED,
        "name": format!("bench indicator {i}"),
        "description": format!("Benchmark indicator {i}: {what}, seen in campaign {}.", i % 97),
        "indicator_types": ["malicious-activity"],
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": CREATED,
        "object_marking_refs": [green],
    })
}

/// A bundle's compact JSON, in the key order the node writes (type, id, objects).
fn bundle_json(k: u64, objects: Vec<Value>) -> String {
    json!({
        "type": "bundle",
        "id": format!("bundle--{}", uuid_for(BUNDLE_SPACE, k)),
        "objects": objects,
    })
    .to_string()
}

/// Indicators `0..n` as ImportStix bundles, cut at `chunk` objects or 640 KiB.
fn import_bundles(n: usize, chunk: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for i in 0..n {
        let o = indicator(i);
        let len = o.to_string().len();
        if !cur.is_empty() && (cur.len() >= chunk || bytes + len > CHUNK_BYTES) {
            out.push(bundle_json(out.len() as u64, std::mem::take(&mut cur)));
            bytes = 0;
        }
        bytes += len;
        cur.push(o);
    }
    if !cur.is_empty() {
        out.push(bundle_json(out.len() as u64, cur));
    }
    out
}

fn green() -> Option<pb::Marking> {
    Some(pb::Marking {
        tlp: pb::Tlp::Green as i32,
        ..Default::default()
    })
}

fn publish_stix(json: String) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: pb::Kind::StixBundle as i32,
        level: pb::Level::Technical as i32,
        marking: green(),
        body: Some(pb::publish_request::Body::Stix(pb::StixBundle { json })),
        ..Default::default()
    }
}

/// Free text whose encoded content is the size of a `len`-byte bundle's (the body string
/// takes the place of the bundle's JSON string).
fn publish_text(len: usize) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: pb::Kind::FreeText as i32,
        level: pb::Level::Technical as i32,
        marking: green(),
        body: Some(pb::publish_request::Body::FreeText(pb::FreeText {
            title: String::new(),
            body: "x".repeat(len),
        })),
        ..Default::default()
    }
}

/// Run `call(0..n)` with at most `concurrency` in flight, each bounded by [`CALL_TIMEOUT`].
async fn in_flight<T, F, Fut>(n: usize, concurrency: usize, mut call: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let fut = call(i);
        tasks.push(tokio::spawn(
            async move {
                let r = tokio::time::timeout(CALL_TIMEOUT, fut).await;
                drop(permit);
                r.map_err(|_| anyhow::anyhow!("call {i} took over {CALL_TIMEOUT:?}"))?
            }
            .instrument(tracing::debug_span!("bench-call", call = i)),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Poll until the store holds `target` messages or `deadline` passes: (count, when).
async fn wait_held(
    conn: &Connection,
    target: u64,
    deadline: Instant,
) -> anyhow::Result<(u64, Instant)> {
    loop {
        let n = held(conn).await?;
        let now = Instant::now();
        if n >= target || now >= deadline {
            return Ok((n, now));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One publishing run timed to delivery at recv-b.
struct Delivery {
    messages: usize,
    delivered: u64,
    acked: Duration,
    elapsed: Duration,
}

impl Delivery {
    fn per_s(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
    fn json(&self) -> Value {
        json!({"messages": self.messages, "delivered": self.delivered,
               "acked_s": self.acked.as_secs_f64(), "elapsed_s": self.elapsed.as_secs_f64(),
               "msg_per_s": self.per_s(self.messages).round()})
    }
}

/// Publish `requests` at pub-a with `concurrency` in flight; the clock stops when recv-b
/// holds them all (or at `timeout`).
async fn publish_timed(
    publisher: &Connection,
    receiver: &Connection,
    requests: Vec<pb::PublishRequest>,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Delivery> {
    let n = requests.len();
    let before = held(receiver).await?;
    let mut requests: Vec<Option<pb::PublishRequest>> = requests.into_iter().map(Some).collect();
    let start = Instant::now();
    in_flight(n, concurrency, |i| {
        let mut c = publisher.client();
        let req = requests[i].take().unwrap_or_default();
        async move { Ok(c.publish(req).await?.into_inner().id) }
    })
    .await?;
    let acked = start.elapsed();
    let (count, at) = wait_held(receiver, before + n as u64, Instant::now() + timeout).await?;
    Ok(Delivery {
        messages: n,
        delivered: count.saturating_sub(before),
        acked,
        elapsed: at - start,
    })
}

/// What the import phase did.
struct Import {
    delivery: Delivery,
    published: u64,
    skipped: u64,
    refused: usize,
}

async fn import_timed(
    publisher: &Connection,
    receiver: &Connection,
    bundles: &[String],
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Import> {
    let before = held(receiver).await?;
    let start = Instant::now();
    let responses = in_flight(bundles.len(), concurrency, |i| {
        let mut c = publisher.client();
        let req = pb::ImportStixRequest {
            bundle: bundles[i].clone(),
            level: pb::Level::Technical as i32,
            marking: green(),
            ..Default::default()
        };
        async move { Ok(c.import_stix(req).await?.into_inner()) }
    })
    .await?;
    let acked = start.elapsed();
    let messages: usize = responses.iter().map(|r| r.published.len()).sum();
    let (count, at) =
        wait_held(receiver, before + messages as u64, Instant::now() + timeout).await?;
    Ok(Import {
        delivery: Delivery {
            messages,
            delivered: count.saturating_sub(before),
            acked,
            elapsed: at - start,
        },
        published: responses
            .iter()
            .map(|r| u64::from(r.objects_published))
            .sum(),
        skipped: responses.iter().map(|r| u64::from(r.objects_skipped)).sum(),
        refused: responses.iter().map(|r| r.refused.len()).sum(),
    })
}

/// A TAXII client on one HTTP/1.1 keep-alive connection over TLS 1.3 with a user certificate.
struct TaxiiClient {
    sender: http1::SendRequest<Empty<Bytes>>,
    host: String,
    tls_version: String,
}

impl TaxiiClient {
    async fn connect(addr: SocketAddr, user_dir: &std::path::Path) -> anyhow::Result<Self> {
        let id = TlsIdentity::load(
            &user_dir.join("ca.crt"),
            &user_dir.join("user.crt"),
            &user_dir.join("user.key"),
            None,
        )?;
        let mut cfg = (*id.client_config()?).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        // The listener comes up with the node, possibly after its gRPC port: retry briefly.
        let mut tcp = None;
        for _ in 0..100 {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let tcp = tcp.with_context(|| format!("no TAXII listener on {addr} after 10 s"))?;
        tcp.set_nodelay(true)?;
        let tls = connector
            .connect(ServerName::from(addr.ip()), tcp)
            .await
            .context("TLS handshake with the TAXII listener")?;
        let tls_version = tls
            .get_ref()
            .1
            .protocol_version()
            .map_or_else(|| "unknown".to_string(), |v| format!("{v:?}"));
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "TAXII client connection ended");
                }
            }
            .instrument(tracing::debug_span!("taxii-client", remote = %addr)),
        );
        Ok(Self {
            sender,
            host: addr.to_string(),
            tls_version,
        })
    }

    /// GET `path`: the whole body, or why not.
    async fn get(&mut self, path: &str) -> anyhow::Result<Bytes> {
        let req = hyper::Request::get(path)
            .header(HOST, &self.host)
            .header(ACCEPT, bluewire_node::taxii::TAXII_MEDIA)
            .body(Empty::<Bytes>::new())?;
        let fetch = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, fetch)
            .await
            .map_err(|_| anyhow::anyhow!("GET {path} took over {CALL_TIMEOUT:?}"))??;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}

/// Phase 2 as measured over TAXII.
struct Paging {
    complete: bool,
    pages: usize,
    objects: usize,
    bytes: usize,
    elapsed: Duration,
    client_parse: Duration,
    latencies_ms: Vec<f64>,
    tls_version: String,
}

async fn taxii_paging(
    addr: SocketAddr,
    user_dir: &std::path::Path,
    limit: usize,
    max_pages: usize,
    bound: Duration,
) -> anyhow::Result<Paging> {
    let mut c = TaxiiClient::connect(addr, user_dir).await?;
    let list: Value = serde_json::from_slice(&c.get("/api/collections/").await?)?;
    let cid = list["collections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["title"] == "federation")
        .and_then(|x| x["id"].as_str())
        .context("pub-a lists no collection titled federation")?
        .to_string();
    let mut p = Paging {
        complete: false,
        pages: 0,
        objects: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        client_parse: Duration::ZERO,
        latencies_ms: Vec::new(),
        tls_version: c.tls_version.clone(),
    };
    let start = Instant::now();
    let mut next: Option<String> = None;
    for _ in 0..max_pages {
        let path = match &next {
            None => format!("/api/collections/{cid}/objects/?limit={limit}"),
            Some(t) => format!("/api/collections/{cid}/objects/?limit={limit}&next={t}"),
        };
        let t0 = Instant::now();
        let body = c.get(&path).await?;
        p.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        let t1 = Instant::now();
        let page: Value = serde_json::from_slice(&body)?;
        p.client_parse += t1.elapsed();
        p.pages += 1;
        p.bytes += body.len();
        p.objects += page["objects"].as_array().map_or(0, Vec::len);
        next = page["next"].as_str().map(String::from);
        if page["more"] != true || next.is_none() {
            p.complete = true;
            break;
        }
        if start.elapsed() >= bound {
            break;
        }
    }
    p.elapsed = start.elapsed();
    p.latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(p)
}

/// Phase 2's baseline: the feed through gRPC, converted to STIX objects and serialised.
struct FeedRead {
    messages: usize,
    objects: usize,
    elapsed: Duration,
    convert: Duration,
}

async fn grpc_feed(conn: &Connection, max_items: usize) -> anyhow::Result<FeedRead> {
    let start = Instant::now();
    let mut stream = conn
        .client()
        .subscribe(pb::SubscribeRequest {
            no_follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut r = FeedRead {
        messages: 0,
        objects: 0,
        elapsed: Duration::ZERO,
        convert: Duration::ZERO,
    };
    for _ in 0..max_items {
        let Some(item) = tokio::time::timeout(CALL_TIMEOUT, stream.message())
            .await
            .map_err(|_| anyhow::anyhow!("the feed stalled for {CALL_TIMEOUT:?}"))??
        else {
            break;
        };
        let Some(content) = item.content else {
            continue;
        };
        let tlp = item
            .effective_marking
            .as_ref()
            .or(content.marking.as_ref())
            .and_then(|m| pb::Tlp::try_from(m.tlp).ok())
            .unwrap_or_default();
        let t = Instant::now();
        let objects = stix::export::objects(&content, tlp);
        let text = serde_json::to_string(&objects)?;
        r.convert += t.elapsed();
        r.messages += 1;
        r.objects += objects.len();
        std::hint::black_box(text);
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

/// CPU time (s) each node process has used so far: utime + stime of all its threads from
/// /proc/PID/stat, in USER_HZ ticks (100 per second on every Linux build).
fn node_cpu(fed: &LocalFederation) -> Vec<f64> {
    fed.orgs
        .iter()
        .map(|o| {
            o.pid()
                .and_then(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    // After the command name (in parentheses, may hold spaces) comes field 3.
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    let utime: f64 = fields.get(11)?.parse().ok()?;
                    let stime: f64 = fields.get(12)?.parse().ok()?;
                    Some((utime + stime) / 100.0)
                })
                .unwrap_or(f64::NAN)
        })
        .collect()
}

/// CPU seconds (pub-a, recv-b) spent between two [`node_cpu`] readings.
fn cpu_delta(before: &[f64], after: &[f64]) -> [f64; 2] {
    let d = |i: usize| {
        after.get(i).copied().unwrap_or(f64::NAN) - before.get(i).copied().unwrap_or(f64::NAN)
    };
    [d(0), d(1)]
}

fn cpu_json(c: [f64; 2]) -> Value {
    let r = |x: f64| (x * 100.0).round() / 100.0;
    json!({"pub_a": r(c[0]), "recv_b": r(c[1])})
}

/// Median milliseconds of `f` over [`STEP_REPS`] runs.
fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..STEP_REPS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

/// Single-core cost (ms) of the steps the nodes' STIX path is made of, on one chunk: parse
/// (serde_json), the per-object checks (schema, references, pattern grammar), serialise,
/// the store's index extraction, the TAXII/export conversion, encode + sign, verify.
fn step_costs(json: &str) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let bundle = stix::parse(json).map_err(|e| anyhow::anyhow!(e))?;
    let objects = stix::bundle_objects(&bundle).map_err(|e| anyhow::anyhow!(e))?;
    let content = pb::Content {
        id: uuid::Uuid::now_v7().to_string(),
        origin_org: "pub-a".into(),
        author: "pub-a/analyst".into(),
        created_at_ms: bluewire_node::clock::now_ms(),
        kind: pb::Kind::StixBundle as i32,
        level: pb::Level::Technical as i32,
        marking: green(),
        body: Some(pb::content::Body::Stix(pb::StixBundle {
            json: json.to_string(),
        })),
        ..Default::default()
    };
    let key = SigningKey::generate("bench").map_err(|e| anyhow::anyhow!(e))?;
    let bytes = content.encode_to_vec();
    let sig = key.sign(MESSAGE_CONTEXT, &bytes);
    let pk = key.public_key();
    let mut ok = true;
    let costs = vec![
        (
            "parse",
            median_ms(|| {
                std::hint::black_box(stix::parse(json).is_ok());
            }),
        ),
        (
            "check_objects",
            median_ms(|| {
                for o in objects {
                    ok &= stix::check_object(o, pb::Tlp::Green).is_ok();
                }
            }),
        ),
        (
            "serialise",
            median_ms(|| {
                ok &= serde_json::to_string(&bundle).is_ok_and(|t| t.len() == json.len());
            }),
        ),
        (
            "index_of",
            median_ms(|| {
                std::hint::black_box(stix::index_of(&content));
            }),
        ),
        (
            "export",
            median_ms(|| {
                std::hint::black_box(stix::export::objects(&content, pb::Tlp::Green));
            }),
        ),
        (
            "encode_sign",
            median_ms(|| {
                std::hint::black_box(key.sign(MESSAGE_CONTEXT, &content.encode_to_vec()));
            }),
        ),
        (
            "verify",
            median_ms(|| {
                ok &= signing::verify(&pk, MESSAGE_CONTEXT, &bytes, &sig);
            }),
        ),
    ];
    if !ok {
        bail!("a generated bundle failed the node's own checks");
    }
    Ok(costs)
}

pub async fn run(a: StixArgs, out: Output) -> anyhow::Result<()> {
    if !(1..=10_000).contains(&a.page) {
        bail!("--page {} is not between 1 and 10000", a.page);
    }
    if !(1..=stix::MAX_OBJECTS).contains(&a.chunk) {
        bail!(
            "--chunk {} is not between 1 and {}",
            a.chunk,
            stix::MAX_OBJECTS
        );
    }
    if a.indicators == 0 || a.messages == 0 {
        bail!("--indicators and --messages must be at least 1");
    }
    let timeout = Duration::from_secs(a.timeout);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let specs = super::bench_orgs(&["pub-a", "recv-b"]);
    // Dropped after the federation (declared before it): see `super::work_dir`.
    let (tmp, _cleanup) = super::work_dir(a.dir.as_deref(), "bluewire-bench-stix");
    let edits = super::unlimited_client();
    let mut fed = LocalFederation::create(&tmp, &specs, &edits)?;
    let taxii_addr = crate::local::free_port()?;
    {
        let path = fed.org("pub-a").config_path();
        let text = std::fs::read_to_string(&path)?;
        let on = text
            .replace(
                "enabled = false\nlisten = \"127.0.0.1:9443\"",
                &format!("enabled = true\nlisten = \"{taxii_addr}\""),
            )
            .replace("page_size = 1000 ", &format!("page_size = {} ", a.page));
        anyhow::ensure!(
            on.contains(&format!("listen = \"{taxii_addr}\"")),
            "the node.toml template has no [taxii] section to enable"
        );
        std::fs::write(&path, on)?;
    }

    eprintln!("generating {} indicators…", a.indicators);
    let bundles = import_bundles(a.indicators, a.chunk);
    let sizes: Vec<usize> = bundles.iter().map(String::len).collect();
    // Phase 3's bundles: whole indicators after phase 1's, about `size` bytes each.
    let per_indicator = indicator(a.indicators).to_string().len() + 1;
    let k = (a.size.saturating_sub(80) / per_indicator).max(1);
    let small: Vec<String> = (0..a.messages)
        .map(|j| {
            let first = a.indicators + j * k;
            bundle_json(
                (bundles.len() + j) as u64,
                (first..first + k).map(indicator).collect(),
            )
        })
        .collect();
    let small_bytes = small.iter().map(String::len).sum::<usize>() / small.len();
    eprintln!("measuring the STIX steps on one chunk in this process…");
    let steps = step_costs(&bundles[0])?;

    fed.start_all()?;
    fed.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let publisher = fed.connect("pub-a", "analyst")?;
    let receiver = fed.connect("recv-b", "operator")?;
    // Connect both channels before any clock starts.
    publisher.federation().hello(pb::HelloRequest {}).await?;
    held(&receiver).await?;

    // Phase 1: import, end to end.
    eprintln!(
        "phase 1: importing {} indicators in {} requests, {} in flight…",
        a.indicators,
        bundles.len(),
        a.import_concurrency
    );
    let cpu0 = node_cpu(&fed);
    let import = import_timed(
        &publisher,
        &receiver,
        &bundles,
        a.import_concurrency,
        timeout,
    )
    .await?;

    // Phase 2: TAXII paging, then the same messages through the gRPC feed.
    eprintln!(
        "phase 2: paging the federation collection over TAXII (limit {}, at most {} s)…",
        a.page, a.taxii_seconds
    );
    let cpu_import = cpu_delta(&cpu0, &node_cpu(&fed));
    let max_pages = a.indicators / a.page * 2 + 16;
    let cpu0 = node_cpu(&fed);
    let paging = taxii_paging(
        taxii_addr,
        &fed.org("pub-a").user_dir("analyst"),
        a.page,
        max_pages,
        Duration::from_secs(a.taxii_seconds),
    )
    .await?;
    let cpu_paging = cpu_delta(&cpu0, &node_cpu(&fed));
    eprintln!("phase 2 baseline: the same feed through gRPC Subscribe…");
    let cpu0 = node_cpu(&fed);
    let feed = grpc_feed(&publisher, bundles.len() + 16).await?;
    let cpu_feed = cpu_delta(&cpu0, &node_cpu(&fed));

    // Phase 1's baseline: free text of the same sizes, same concurrency.
    eprintln!(
        "phase 1 baseline: {} free-text messages of the same sizes…",
        sizes.len()
    );
    let cpu0 = node_cpu(&fed);
    let text_import = publish_timed(
        &publisher,
        &receiver,
        sizes.iter().map(|n| publish_text(*n)).collect(),
        a.import_concurrency,
        timeout,
    )
    .await?;

    // Phase 3: fan-out of small bundles vs free text of the same size.
    eprintln!(
        "phase 3: {} stix-bundle messages of {} indicators ({} B), then {} free-text messages of the same sizes, {} in flight…",
        a.messages, k, small_bytes, a.messages, a.concurrency
    );
    let cpu_text_import = cpu_delta(&cpu0, &node_cpu(&fed));
    let small_sizes: Vec<usize> = small.iter().map(String::len).collect();
    let cpu0 = node_cpu(&fed);
    let stix_fanout = publish_timed(
        &publisher,
        &receiver,
        small.into_iter().map(publish_stix).collect(),
        a.concurrency,
        timeout,
    )
    .await?;
    let cpu_stix_fanout = cpu_delta(&cpu0, &node_cpu(&fed));
    let cpu0 = node_cpu(&fed);
    let text_fanout = publish_timed(
        &publisher,
        &receiver,
        small_sizes.iter().map(|n| publish_text(*n)).collect(),
        a.concurrency,
        timeout,
    )
    .await?;
    let cpu_text_fanout = cpu_delta(&cpu0, &node_cpu(&fed));
    let rss = fed.rss_kib();
    fed.stop_all();
    drop(fed);

    let import_rate = import.delivery.per_s(a.indicators);
    let import_base = text_import.per_s(a.indicators);
    let taxii_rate = paging.objects as f64 / paging.elapsed.as_secs_f64();
    let feed_rate = feed.objects as f64 / feed.elapsed.as_secs_f64();
    let stix_rate = stix_fanout.per_s(stix_fanout.messages);
    let text_rate = text_fanout.per_s(text_fanout.messages);
    let chunk_bytes = sizes.iter().sum::<usize>() / sizes.len();
    let result = json!({
        "cores": cores,
        "workload": {"nodes": 2, "indicators": a.indicators, "import_requests": sizes.len(),
                     "import_chunk_bytes_mean": chunk_bytes, "import_concurrency": a.import_concurrency,
                     "taxii_limit": a.page, "fanout_messages": a.messages, "fanout_indicators_per_bundle": k,
                     "fanout_bundle_bytes_mean": small_bytes, "fanout_concurrency": a.concurrency},
        "import": {"delivery": import.delivery.json(), "indicators_per_s": import_rate.round(),
                   "objects_published": import.published, "objects_skipped": import.skipped,
                   "objects_refused": import.refused,
                   "baseline_free_text": text_import.json(), "baseline_indicators_per_s": import_base.round(),
                   "ratio": import_rate / import_base},
        "taxii": {"complete": paging.complete, "pages": paging.pages, "objects": paging.objects,
                  "bytes": paging.bytes, "elapsed_s": paging.elapsed.as_secs_f64(),
                  "objects_per_s": taxii_rate.round(),
                  "page_ms": {"p50": percentile(&paging.latencies_ms, 0.5),
                              "max": paging.latencies_ms.last().copied().unwrap_or(f64::NAN)},
                  "client_parse_s": paging.client_parse.as_secs_f64(), "tls": paging.tls_version,
                  "baseline_grpc_feed": {"messages": feed.messages, "objects": feed.objects,
                                         "elapsed_s": feed.elapsed.as_secs_f64(),
                                         "convert_s": feed.convert.as_secs_f64(),
                                         "objects_per_s": feed_rate.round()},
                  "ratio": taxii_rate / feed_rate},
        "fanout": {"stix_bundle": stix_fanout.json(), "free_text": text_fanout.json(),
                   "ratio": stix_rate / text_rate},
        "steps_ms_per_chunk": steps.iter().map(|(n, ms)| (n.to_string(), json!(ms))).collect::<serde_json::Map<_, _>>(),
        "node_cpu_s": {"import": cpu_json(cpu_import), "import_baseline": cpu_json(cpu_text_import),
                       "taxii_paging": cpu_json(cpu_paging), "grpc_feed": cpu_json(cpu_feed),
                       "fanout_stix": cpu_json(cpu_stix_fanout), "fanout_free_text": cpu_json(cpu_text_fanout)},
        "rss_kib": rss.iter().map(|(o, k)| json!({"org": o, "kib": k})).collect::<Vec<_>>(),
    });
    match out {
        Output::Json => println!("{result}"),
        Output::Table => {
            println!(
                "machine: {cores} cores; 2 nodes (pub-a -> recv-b) on loopback; RSS after: {}",
                rss.iter()
                    .map(|(o, k)| format!("{o} {:.1} MiB", *k as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "1. import: {} indicators in {} ImportStix requests ({} in flight, mean {} B) delivered to recv-b in {:.2} s = {:.0} indicators/s (acked in {:.2} s; {} published, {} skipped, {} refused; {}/{} messages at recv-b)",
                a.indicators,
                sizes.len(),
                a.import_concurrency,
                chunk_bytes,
                import.delivery.elapsed.as_secs_f64(),
                import_rate,
                import.delivery.acked.as_secs_f64(),
                import.published,
                import.skipped,
                import.refused,
                import.delivery.delivered,
                import.delivery.messages,
            );
            println!(
                "   baseline: {} free-text messages of the same sizes delivered in {:.2} s (acked in {:.2} s) = {:.0} indicators/s equivalent -> ratio {:.2}",
                text_import.messages,
                text_import.elapsed.as_secs_f64(),
                text_import.acked.as_secs_f64(),
                import_base,
                import_rate / import_base
            );
            let per_msg = |c: [f64; 2], n: usize| {
                let n = n.max(1) as f64;
                format!(
                    "pub-a {:.2} ms, recv-b {:.2} ms",
                    c[0] * 1000.0 / n,
                    c[1] * 1000.0 / n
                )
            };
            println!(
                "   node CPU per imported message: {}; per free-text baseline message: {}",
                per_msg(cpu_import, import.delivery.messages),
                per_msg(cpu_text_import, text_import.messages)
            );
            println!(
                "2. TAXII ({}, HTTP/1.1 keep-alive, limit {}): {} objects in {} pages in {:.2} s = {:.0} objects/s; page p50 {:.1} ms, max {:.1} ms; {:.1} MB; client JSON parse {:.2} s{}",
                paging.tls_version,
                a.page,
                paging.objects,
                paging.pages,
                paging.elapsed.as_secs_f64(),
                taxii_rate,
                percentile(&paging.latencies_ms, 0.5),
                paging.latencies_ms.last().copied().unwrap_or(f64::NAN),
                paging.bytes as f64 / 1e6,
                paging.client_parse.as_secs_f64(),
                if paging.complete {
                    String::new()
                } else {
                    format!(" (INCOMPLETE: stopped at the {} s bound)", a.taxii_seconds)
                }
            );
            println!(
                "   baseline: gRPC feed (Subscribe no_follow) + stix::export::objects + JSON: {} objects from {} messages in {:.2} s ({:.2} s converting) = {:.0} objects/s -> ratio {:.3}",
                feed.objects,
                feed.messages,
                feed.elapsed.as_secs_f64(),
                feed.convert.as_secs_f64(),
                feed_rate,
                taxii_rate / feed_rate
            );
            println!(
                "   node CPU: pub-a {:.2} s while paging ({:.2} s wall), {:.2} s serving the gRPC feed",
                cpu_paging[0],
                paging.elapsed.as_secs_f64(),
                cpu_feed[0]
            );
            println!(
                "3. fan-out, {} in flight: {} stix-bundle messages ({} indicators, mean {} B) delivered in {:.2} s = {:.0} msg/s; free text of the same sizes {:.2} s = {:.0} msg/s -> ratio {:.2}",
                a.concurrency,
                stix_fanout.messages,
                k,
                small_bytes,
                stix_fanout.elapsed.as_secs_f64(),
                stix_rate,
                text_fanout.elapsed.as_secs_f64(),
                text_rate,
                stix_rate / text_rate
            );
            println!(
                "   node CPU per message: stix-bundle {}; free text {}",
                per_msg(cpu_stix_fanout, stix_fanout.messages),
                per_msg(cpu_text_fanout, text_fanout.messages)
            );
            println!(
                "STIX steps on one {}-indicator chunk ({} B), 1 core, this process (median of {STEP_REPS}): {}",
                a.chunk.min(a.indicators),
                sizes.first().copied().unwrap_or(0),
                steps
                    .iter()
                    .map(|(n, ms)| format!("{n} {ms:.2} ms"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if import.refused > 0 || import.delivery.delivered < import.delivery.messages as u64 {
        bail!(
            "the import did not complete: {} objects refused, {}/{} messages at recv-b within {} s",
            import.refused,
            import.delivery.delivered,
            import.delivery.messages,
            a.timeout
        );
    }
    for (what, d) in [
        ("the free-text import baseline", &text_import),
        ("the stix-bundle fan-out", &stix_fanout),
        ("the free-text fan-out", &text_fanout),
    ] {
        if d.delivered < d.messages as u64 {
            bail!(
                "{what}: only {}/{} messages reached recv-b within {} s",
                d.delivered,
                d.messages,
                a.timeout
            );
        }
    }
    Ok(())
}
