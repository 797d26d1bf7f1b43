//! `bluewire bench floor`: the fan-out's transport alone. The same five processes, the same
//! certificates, mutual TLS (TLS 1.3, X25519MLKEM768) and HTTP/2 settings as the nodes, the
//! same calls carrying the same messages: one stream of publishes to the origin, one stream
//! of deliveries to each receiver with one request in flight and whatever queued meanwhile
//! batched into it (each request carrying a hybrid signature's 3,373 bytes once), one feed
//! item per message to a subscriber at each receiver. Nothing else: no store, no signature
//! made or checked, no routing, no admission. What it costs per message is what a Bluewire
//! node could not go below on this stack (tonic, hyper, rustls, tokio) with this topology.
//! With `--sign`, the one thing more a node can never leave out: each message signed at the
//! origin and checked at each receiver with the nodes' own hybrid Ed25519 + ML-DSA-65 code
//! (`envelope::seal`, `envelope::open_with`), one signature per message.
//! A benchmark, not a test: it asserts nothing and is bounded in count and time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bluewire_node::tls::{self, AcceptRules, LinkInfo, TlsIdentity};
use bluewire_proto::bench::v1::floor_client::FloorClient;
use bluewire_proto::bench::v1::floor_server::{Floor, FloorServer};
use bluewire_proto::v1 as pb;
use bytes::Bytes;
use clap::Args;
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::{
    Arrivals, RECEIVERS, arrival_latencies, note_arrival, own_cpu_seconds, percentile,
    process_cpu_seconds, publish_stream, wait_for_arrivals,
};
use crate::Output;
use crate::local::LocalFederation;

#[derive(Debug, Args)]
pub struct FloorArgs {
    #[command(flatten)]
    pub workload: super::Workload,
    /// Sign each message at the origin and check it at each receiver with the nodes' own
    /// hybrid signature code (one signature per message; a node's batches share theirs)
    #[arg(long)]
    pub sign: bool,
}

/// One process of the floor (started by `bluewire bench floor`, not by hand).
#[derive(Debug, Args)]
pub struct FloorNodeArgs {
    /// The organisation this process stands for.
    #[arg(long)]
    pub org: String,
    /// Its directory as provisioned for a node (`ca.crt`, `node.crt`, `node.key`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Where to listen.
    #[arg(long)]
    pub listen: SocketAddr,
    /// A receiver this process delivers to, as `ORG=https://HOST:PORT` (the origin only).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// `--sign`: the run's signing key as 128 hex digits (two 32-byte seeds: Ed25519, ML-DSA-65),
    /// the same for every process of one run and never written to disk.
    #[arg(long)]
    pub signing_seed: Option<String>,
}

/// The origin's organisation: the signer of every message (`--sign`).
const ORIGIN: &str = "pub-a";

/// `--sign`: the run's key. The origin signs with it; receivers check with its public half.
struct Signing {
    key: bluewire_node::signing::SigningKey,
    public: Vec<u8>,
}

impl Signing {
    fn from_seed(hex_seed: &str) -> anyhow::Result<Self> {
        let seed: [u8; 64] = hex::decode(hex_seed)
            .context("--signing-seed: not hex")?
            .try_into()
            .map_err(|_| anyhow::anyhow!("--signing-seed: expected 64 bytes"))?;
        let (ed, pq) = seed.split_at(32);
        let key =
            bluewire_node::signing::SigningKey::from_seeds(ORIGIN, ed.try_into()?, pq.try_into()?)?;
        let public = key.public_key();
        Ok(Self { key, public })
    }
}

/// What a request carries at most, both ways (the nodes' default).
const MAX_MESSAGE: usize = bluewire_node::client::CLIENT_MAX_MESSAGE;
/// The most envelopes one delivery request carries.
const MAX_BATCH: usize = 512;

/// One floor process: the origin when it has peers, a receiver otherwise.
struct FloorNode {
    org: String,
    seq: AtomicU64,
    /// The origin: one queue per receiver's delivery worker.
    queues: Vec<mpsc::UnboundedSender<pb::Envelope>>,
    queued_for: Vec<String>,
    /// A receiver: the feed its subscribers read.
    feed: broadcast::Sender<pb::FeedItem>,
    /// `--sign`: the origin signs each message, receivers check each.
    signing: Option<Signing>,
}

impl FloorNode {
    /// The origin's part of a publish: the content a node would sign, in an envelope, queued
    /// for every receiver.
    fn publish_one(&self, index: u64, req: pb::PublishRequest) -> pb::PublishResult {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("0193f000-0000-7000-8000-{seq:012x}");
        let content = pb::Content {
            id: id.clone(),
            origin_org: self.org.clone(),
            author: format!("{}/analyst", self.org),
            created_at_ms: bluewire_node::clock::now_ms(),
            kind: req.kind,
            level: req.level,
            marking: req.marking,
            recipients: req.recipients,
            cluster: req.cluster,
            body: req.body.map(|b| match b {
                pb::publish_request::Body::FreeText(t) => pb::content::Body::FreeText(t),
                // The floor publishes free text only.
                _ => pb::content::Body::FreeText(pb::FreeText::default()),
            }),
            ..Default::default()
        };
        let envelope = match &self.signing {
            Some(s) => bluewire_node::envelope::seal(&s.key, &content),
            None => pb::Envelope {
                content: Bytes::from(content.encode_to_vec()),
                key_id: format!("{}/0123456789abcdef", self.org),
                ..Default::default()
            },
        };
        for q in &self.queues {
            let _ = q.send(envelope.clone());
        }
        pb::PublishResult {
            index,
            published: Some(pb::PublishResponse {
                id,
                seq,
                queued_for: self.queued_for.clone(),
                refused: Vec::new(),
            }),
            ..Default::default()
        }
    }

    /// A receiver's part of a delivery: each envelope's content decoded (and its signature
    /// checked, with `--sign`), a feed item for each, one result each.
    fn deliver_one(&self, req: pb::DeliverRequest) -> pb::DeliverResponse {
        let open = |e: &pb::Envelope| -> Result<pb::Content, String> {
            match &self.signing {
                Some(s) => bluewire_node::envelope::open_with(
                    e,
                    |key_id| (key_id == s.key.key_id()).then(|| (ORIGIN.into(), s.public.clone())),
                    bluewire_node::clock::now_ms(),
                    None,
                )
                .map(|opened| opened.content)
                .map_err(|r| r.to_string()),
                None => pb::Content::decode(e.content.as_ref()).map_err(|e| e.to_string()),
            }
        };
        let results = req
            .envelopes
            .iter()
            .map(|e| match open(e) {
                Ok(content) => {
                    let id = content.id.clone();
                    let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                    let _ = self.feed.send(pb::FeedItem {
                        seq,
                        signer_org: content.origin_org.clone(),
                        content: Some(content),
                        // Whether a signature was checked (`--sign`): the driver counts
                        // the items that say otherwise.
                        verified: self.signing.is_some(),
                        received_from: ORIGIN.into(),
                        received_at_ms: bluewire_node::clock::now_ms(),
                        ..Default::default()
                    });
                    pb::DeliveryResult {
                        outcome: pb::DeliveryOutcome::Accepted as i32,
                        id,
                        ..Default::default()
                    }
                }
                Err(reason) => pb::DeliveryResult {
                    outcome: pb::DeliveryOutcome::Rejected as i32,
                    reason,
                    ..Default::default()
                },
            })
            .collect();
        pb::DeliverResponse {
            results,
            ..Default::default()
        }
    }
}

/// Answers each request of `input` with `answer`, in order, on a bounded stream.
fn answer_each<Q, A>(
    mut input: Streaming<Q>,
    mut answer: impl FnMut(Q) -> A + Send + 'static,
) -> ReceiverStream<Result<A, Status>>
where
    Q: Send + 'static,
    A: Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(Some(q)) = input.message().await {
            if tx.send(Ok(answer(q))).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// [`FloorNode`] as the gRPC service.
struct Service(Arc<FloorNode>);

#[tonic::async_trait]
impl Floor for Service {
    type PublishStream = ReceiverStream<Result<pb::PublishResult, Status>>;
    type DeliverStream = ReceiverStream<Result<pb::DeliverResponse, Status>>;
    type SubscribeStream = ReceiverStream<Result<pb::FeedItem, Status>>;

    async fn publish(
        &self,
        req: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStream>, Status> {
        let me = self.0.clone();
        let mut index = 0;
        Ok(Response::new(answer_each(req.into_inner(), move |q| {
            index += 1;
            me.publish_one(index - 1, q)
        })))
    }

    async fn deliver(
        &self,
        req: Request<Streaming<pb::DeliverRequest>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        let me = self.0.clone();
        Ok(Response::new(answer_each(req.into_inner(), move |q| {
            me.deliver_one(q)
        })))
    }

    async fn subscribe(
        &self,
        _req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut feed = self.0.feed.subscribe();
        // 64 items buffered per subscriber, as a node's feed holds.
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(item) = feed.recv().await {
                if tx.send(Ok(item)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The origin's worker for one receiver: one Deliver stream, one request in flight, each
/// request carrying whatever queued while the previous one was out.
async fn deliver_worker(
    org: String,
    mut client: FloorClient<Channel>,
    mut queue: mpsc::UnboundedReceiver<pb::Envelope>,
    signed: bool,
) -> anyhow::Result<()> {
    // Unsigned envelopes: an Ed25519 signature and an ML-DSA-65 one in the request, as a
    // batch carries. Signed ones carry their own.
    let signature = Bytes::from(vec![0x5a; bluewire_node::signing::SIGNATURE_LEN]);
    // Opened at the first message: the receivers are up by then.
    let Some(mut first) = queue.recv().await else {
        return Ok(());
    };
    let (tx, rx) = mpsc::channel(1);
    let mut answers = client.deliver(ReceiverStream::new(rx)).await?.into_inner();
    loop {
        let mut envelopes = vec![first];
        while envelopes.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(e) => envelopes.push(e),
                Err(_) => break,
            }
        }
        let n = envelopes.len();
        let (signatures, signature_refs) = if signed {
            (Vec::new(), Vec::new())
        } else {
            (vec![signature.clone()], vec![1; n])
        };
        let request = pb::DeliverRequest {
            envelopes,
            signatures,
            signature_refs,
        };
        tx.send(request).await?;
        let answer = answers
            .message()
            .await?
            .with_context(|| format!("{org} ended the delivery stream"))?;
        if answer.results.len() != n {
            bail!("{org} answered {} of {n} envelopes", answer.results.len());
        }
        // A refused envelope never arrives, and the latencies would be over the rest.
        if let Some(r) = answer
            .results
            .iter()
            .find(|r| r.outcome != pb::DeliveryOutcome::Accepted as i32)
        {
            bail!("{org} refused an envelope: {}", r.reason);
        }
        match queue.recv().await {
            Some(e) => first = e,
            None => return Ok(()),
        }
    }
}

/// `bluewire bench floor-node`: serve [`Floor`] until killed.
pub async fn node(a: FloorNodeArgs) -> anyhow::Result<()> {
    tls::install_default_provider();
    let identity = TlsIdentity::load(
        &a.dir.join("ca.crt"),
        &a.dir.join("node.crt"),
        &a.dir.join("node.key"),
        None,
    )?;
    let tasks = bluewire_node::tasks::Tasks::new();
    let signing = a
        .signing_seed
        .as_deref()
        .map(Signing::from_seed)
        .transpose()?;
    let signed = signing.is_some();
    let mut queues = Vec::new();
    let mut queued_for = Vec::new();
    for peer in &a.peers {
        let (org, endpoint) = peer
            .split_once('=')
            .with_context(|| format!("--peer {peer:?}: expected ORG=https://HOST:PORT"))?;
        let channel = tls::channel(
            endpoint,
            identity.federation_client_config(false)?,
            identity.root_der.clone(),
            Some(org.to_string()),
            Arc::new(Mutex::new(LinkInfo::default())),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let client = FloorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (tx, rx) = mpsc::unbounded_channel();
        queues.push(tx);
        queued_for.push(org.to_string());
        let org = org.to_string();
        tokio::spawn(async move {
            if let Err(e) = deliver_worker(org.clone(), client, rx, signed).await {
                eprintln!("floor: delivering to {org} stopped: {e:#}");
            }
        });
    }
    let node = Arc::new(FloorNode {
        org: a.org,
        seq: AtomicU64::new(0),
        queues,
        queued_for,
        feed: broadcast::channel(4096).0,
        signing,
    });
    let listener = tokio::net::TcpListener::bind(a.listen).await?;
    let incoming = tls::incoming(
        listener,
        identity.clone(),
        identity.server_config()?,
        AcceptRules {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 64,
            allow_classical_kx: false,
            metrics: Arc::new(bluewire_node::metrics::Metrics::new()),
        },
        &tasks,
    );
    // The nodes' HTTP/2 settings (`api::router`).
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(256))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(
            FloorServer::new(Service(node))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The floor's processes, killed when dropped.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Processes {
    fn cpu_seconds(&self) -> Vec<f64> {
        self.0
            .iter()
            .map(|(_, c)| process_cpu_seconds(c.id()))
            .collect()
    }

    /// Fails when a process has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        for (org, c) in &mut self.0 {
            if let Some(status) = c.try_wait()? {
                bail!("the floor process of {org} exited ({status})");
            }
        }
        Ok(())
    }
}

/// CPU per message (µs) over a phase: the origin's, and the receivers' mean.
fn cpu_per_message(before: &[f64], after: &[f64], n: usize) -> (f64, f64) {
    let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let per = |s: f64| s * 1e6 / n.max(1) as f64;
    let receivers = &d[1..];
    (
        per(d[0]),
        per(receivers.iter().sum::<f64>() / receivers.len().max(1) as f64),
    )
}

/// Opens the floor's publish stream on `client` with the requests of `rx`.
async fn open_publish(
    mut client: FloorClient<Channel>,
    rx: impl tokio_stream::Stream<Item = pb::PublishRequest> + Send + 'static,
) -> anyhow::Result<Streaming<pb::PublishResult>> {
    Ok(client.publish(rx).await?.into_inner())
}

pub async fn run(a: FloorArgs, out: Output) -> anyhow::Result<()> {
    let sign = a.sign;
    let a = a.workload;
    let receivers = usize::from(a.receivers);
    let mut names = vec![ORIGIN];
    // A key for this run only, handed to the processes on their command line.
    let seed = sign.then(|| hex::encode(rand::random::<[u8; 64]>()));
    names.extend_from_slice(&RECEIVERS[..receivers]);
    let (tmp, _cleanup) = super::work_dir(a.dir.as_deref(), "bluewire-floor");
    // The certificates and directories of a benchmark federation; its nodes never start.
    let fed = LocalFederation::create(&tmp, &super::bench_orgs(&names), &[])?;
    let exe = std::env::current_exe()?;
    // The origin first, as the CPU figures expect; its links connect at the first message.
    let mut procs = Processes(Vec::new());
    for o in &fed.orgs {
        let listen = o.endpoint.trim_start_matches("https://").to_string();
        let mut cmd = Command::new(&exe);
        cmd.args([
            "bench",
            "floor-node",
            "--org",
            o.spec.org,
            "--listen",
            &listen,
        ])
        .arg("--dir")
        .arg(&o.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        if let Some(seed) = &seed {
            cmd.arg("--signing-seed").arg(seed);
        }
        if o.spec.org == names[0] {
            for r in fed.orgs.iter().skip(1) {
                cmd.arg("--peer")
                    .arg(format!("{}={}", r.spec.org, r.endpoint));
            }
        }
        let child = cmd.spawn().context("starting a floor process")?;
        procs.0.push((o.spec.org.to_string(), child));
    }
    let client_of = |org: &str| -> anyhow::Result<FloorClient<Channel>> {
        Ok(FloorClient::new(fed.connect(org, "analyst")?.channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    };

    let arrivals: Arrivals = Arc::new(Mutex::new(std::collections::HashMap::new()));
    // With `--sign`: feed items that arrived without their signature checked (none, unless a
    // process ignored its key).
    let unchecked = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for o in fed.orgs.iter().skip(1) {
        let mut client = client_of(o.spec.org)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match client.subscribe(pb::SubscribeRequest::default()).await {
                Ok(s) => break s.into_inner(),
                Err(e) if Instant::now() < deadline => {
                    procs.check()?;
                    tracing::debug!(error = %e, "floor process not up yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("{} did not answer within 30 s: {e}", o.spec.org),
            }
        };
        let arrivals = arrivals.clone();
        let unchecked = unchecked.clone();
        subs.push(tokio::spawn(async move {
            while let Ok(Some(item)) = stream.message().await {
                if sign && !item.verified {
                    unchecked.fetch_add(1, Ordering::Relaxed);
                }
                note_arrival(&arrivals, item.content.map(|c| c.id), receivers);
            }
        }));
    }
    let publisher = client_of(names[0])?;
    // The origin's links are lazy: one message through first, so no phase pays a handshake.
    let template = super::free_text(a.size);
    let request = move || template.clone();
    let warm = publish_stream(|rx| open_publish(publisher.clone(), rx), 1, 1, &request).await?;
    if wait_for_arrivals(&arrivals, &warm, receivers, Duration::from_secs(30)).await < warm.len() {
        procs.check()?;
        bail!("the first message did not reach every subscriber within 30 s");
    }

    eprintln!(
        "throughput phase: {} messages, {} in flight…",
        a.messages, a.concurrency
    );
    let cpu_before = procs.cpu_seconds();
    let client_before = own_cpu_seconds();
    let start = Instant::now();
    let ids = publish_stream(
        |rx| open_publish(publisher.clone(), rx),
        a.messages,
        a.concurrency,
        &request,
    )
    .await?;
    let done = wait_for_arrivals(&arrivals, &ids, receivers, Duration::from_secs(120)).await;
    let elapsed = start.elapsed();
    let cpu_after = procs.cpu_seconds();
    let client_cpu_s = own_cpu_seconds() - client_before;
    let cpu_s: f64 = cpu_after.iter().zip(&cpu_before).map(|(a, b)| a - b).sum();
    let throughput = serde_json::json!({
        "delivered_everywhere": done, "elapsed_s": elapsed.as_secs_f64(),
        "msg_per_s": (done as f64 / elapsed.as_secs_f64()).round(),
        "node_cpu_s": cpu_s, "node_cpu_us_per_msg": (cpu_s * 1e6 / done.max(1) as f64).round(),
        "client_cpu_us_per_msg": (client_cpu_s * 1e6 / done.max(1) as f64).round(),
    });

    let mut paced = Vec::new();
    for &rate in &a.rates {
        eprintln!("latency phase: {rate} msg/s for {} s…", a.seconds);
        paced.push(
            paced_phase(
                &procs, &publisher, &arrivals, &request, rate, a.seconds, receivers,
            )
            .await?,
        );
    }
    for s in subs {
        s.abort();
    }
    procs.check()?;
    drop(procs);
    let unchecked = unchecked.load(Ordering::Relaxed);
    if unchecked > 0 {
        bail!("{unchecked} feed items reached a subscriber without their signature checked");
    }

    let what = if sign {
        "transport and signatures: each message signed at the origin and checked at each receiver; no store, no routing"
    } else {
        "transport only: no store, no signature made or checked, no routing"
    };
    let result = serde_json::json!({
        "workload": {"publishers": 1, "receiving_nodes": receivers, "subscribers": receivers, "payload_bytes": a.size,
                     "messages": a.messages, "concurrency": a.concurrency, "paced_rates": a.rates,
                     "paced_seconds": a.seconds, "throughput_publish": "stream", "paced_publish": "stream",
                     "signed": sign, "client_threads": a.client_threads},
        "floor": what,
        "throughput": throughput,
        "paced": paced,
    });
    match out {
        Output::Json => println!("{result}"),
        Output::Table => {
            println!("floor ({what}), 1 -> {receivers}, {} B:", a.size);
            println!(
                "throughput: {done}/{} delivered at all {receivers} subscribers in {:.2} s = {} msg/s; CPU of the five processes {} µs per message",
                a.messages,
                elapsed.as_secs_f64(),
                result["throughput"]["msg_per_s"],
                result["throughput"]["node_cpu_us_per_msg"]
            );
            for p in &paced {
                println!(
                    "latency at {} msg/s paced (asked {}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples); CPU per message: origin {} µs, each receiver {} µs",
                    p["achieved_rate"],
                    p["rate"],
                    p["p50"].as_f64().unwrap_or(f64::NAN),
                    p["p99"].as_f64().unwrap_or(f64::NAN),
                    p["max"].as_f64().unwrap_or(f64::NAN),
                    p["samples"],
                    p["node_cpu_us_per_msg_origin"],
                    p["node_cpu_us_per_msg_receiver"]
                );
            }
        }
    }
    if done < a.messages {
        bail!(
            "only {done} of {} messages reached every subscriber within the time bound",
            a.messages
        );
    }
    Ok(())
}

/// Publish at `rate` msg/s for `seconds` on one stream, each request sent at its time;
/// latency = from sending it to the moment the last receiver's subscriber has it.
async fn paced_phase(
    procs: &Processes,
    publisher: &FloorClient<Channel>,
    arrivals: &Arrivals,
    request: &impl Fn() -> pb::PublishRequest,
    rate: u64,
    seconds: u64,
    receivers: usize,
) -> anyhow::Result<serde_json::Value> {
    let n = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, rx) = mpsc::unbounded_channel();
    let results = open_publish(publisher.clone(), UnboundedReceiverStream::new(rx)).await?;
    let reader = tokio::spawn(super::paced_results(results, n));
    let cpu_before = procs.cpu_seconds();
    let client_before = own_cpu_seconds();
    let start = Instant::now();
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        sent.push(Instant::now());
        if tx.send(request()).is_err() {
            break;
        }
    }
    let achieved_rate = n as f64 / start.elapsed().as_secs_f64();
    drop(tx);
    let stored = reader.await.unwrap_or_default();
    let mut ack = Vec::with_capacity(n);
    let mut ids = vec![String::new(); n];
    for (i, at, id) in stored {
        if let (Some(t0), Some(slot)) = (sent.get(i), ids.get_mut(i)) {
            ack.push((at - *t0).as_secs_f64() * 1000.0);
            *slot = id;
        }
    }
    wait_for_arrivals(arrivals, &ids, receivers, Duration::from_secs(60)).await;
    let cpu_after = procs.cpu_seconds();
    let client_cpu_s = own_cpu_seconds() - client_before;
    let lat = arrival_latencies(arrivals, &sent, &ids);
    ack.sort_by(|a, b| a.total_cmp(b));
    let (origin_cpu, receiver_cpu) = cpu_per_message(&cpu_before, &cpu_after, n);
    Ok(serde_json::json!({
        "rate": rate, "achieved_rate": achieved_rate.round(), "samples": lat.len(),
        "p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99), "max": lat.last().copied().unwrap_or(f64::NAN),
        "publish_ack_p50": percentile(&ack, 0.5), "publish_ack_p99": percentile(&ack, 0.99),
        "node_cpu_us_per_msg_origin": origin_cpu.round(), "node_cpu_us_per_msg_receiver": receiver_cpu.round(),
        "client_cpu_us_per_msg": (client_cpu_s * 1e6 / n.max(1) as f64).round(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(receivers: usize) -> (FloorNode, Vec<mpsc::UnboundedReceiver<pb::Envelope>>) {
        let (queues, rxs): (Vec<_>, Vec<_>) =
            (0..receivers).map(|_| mpsc::unbounded_channel()).unzip();
        let node = FloorNode {
            org: "pub-a".into(),
            seq: AtomicU64::new(0),
            queues,
            queued_for: RECEIVERS[..receivers]
                .iter()
                .map(|r| r.to_string())
                .collect(),
            feed: broadcast::channel(16).0,
            signing: None,
        };
        (node, rxs)
    }

    fn receiver(signing: Option<Signing>) -> FloorNode {
        FloorNode {
            org: "recv-b".into(),
            seq: AtomicU64::new(0),
            queues: Vec::new(),
            queued_for: Vec::new(),
            feed: broadcast::channel(16).0,
            signing,
        }
    }

    /// Each result's outcome and id, in order.
    fn outcomes(answer: &pb::DeliverResponse) -> Vec<(i32, &str)> {
        answer
            .results
            .iter()
            .map(|r| (r.outcome, r.id.as_str()))
            .collect()
    }

    fn signing() -> Signing {
        Signing::from_seed(&hex::encode([7u8; 64])).expect("a key from 64 seed bytes")
    }

    #[test]
    fn a_publish_is_one_envelope_per_receiver_carrying_the_published_content() {
        let (node, mut rxs) = origin(3);
        let r = node.publish_one(7, super::super::free_text(1024));
        assert_eq!(r.index, 7);
        let published = r.published.expect("published");
        assert_eq!(published.seq, 1);
        assert_eq!(published.queued_for, ["recv-b", "recv-c", "recv-d"]);
        for rx in &mut rxs {
            let e = rx.try_recv().expect("an envelope for every receiver");
            let c = pb::Content::decode(e.content.as_ref()).expect("content decodes");
            assert_eq!(c.id, published.id);
            assert_eq!(c.origin_org, "pub-a");
            let Some(pb::content::Body::FreeText(t)) = c.body else {
                panic!("free text expected");
            };
            assert_eq!(t.body.len(), 1024);
            assert!(rx.try_recv().is_err(), "one envelope per publish");
        }
        let next = node.publish_one(8, super::super::free_text(10));
        assert_ne!(next.published.expect("published").id, published.id);
    }

    #[test]
    fn a_delivery_feeds_each_envelope_and_answers_each_in_order() {
        let (origin, mut rxs) = origin(1);
        let ids: Vec<String> = (0..3)
            .map(|i| origin.publish_one(i, super::super::free_text(8)))
            .map(|r| r.published.expect("published").id)
            .collect();
        let mut envelopes: Vec<pb::Envelope> =
            std::iter::from_fn(|| rxs[0].try_recv().ok()).collect();
        envelopes.insert(
            1,
            pb::Envelope {
                content: Bytes::from_static(b"\xff\xff not a content"),
                ..Default::default()
            },
        );
        let receiver = receiver(None);
        let mut feed = receiver.feed.subscribe();
        let answer = receiver.deliver_one(pb::DeliverRequest {
            envelopes,
            ..Default::default()
        });
        let outcomes = outcomes(&answer);
        let accepted = pb::DeliveryOutcome::Accepted as i32;
        assert_eq!(
            outcomes,
            [
                (accepted, ids[0].as_str()),
                (pb::DeliveryOutcome::Rejected as i32, ""),
                (accepted, ids[1].as_str()),
                (accepted, ids[2].as_str()),
            ]
        );
        let fed: Vec<(u64, String)> = std::iter::from_fn(|| feed.try_recv().ok())
            .inspect(|i| assert!(!i.verified, "no signature was checked"))
            .map(|i| (i.seq, i.content.map(|c| c.id).unwrap_or_default()))
            .collect();
        assert_eq!(
            fed,
            [
                (1, ids[0].clone()),
                (2, ids[1].clone()),
                (3, ids[2].clone())
            ]
        );
    }

    #[test]
    fn with_sign_a_receiver_feeds_what_the_origin_signed_and_refuses_it_altered() {
        let (mut origin, mut rxs) = origin(1);
        origin.signing = Some(signing());
        let id = origin
            .publish_one(0, super::super::free_text(64))
            .published
            .expect("published")
            .id;
        let signed = rxs[0].try_recv().expect("an envelope");
        assert_eq!(
            signed.signature.len(),
            bluewire_node::signing::SIGNATURE_LEN
        );
        let mut altered = signed.clone();
        let mut content = altered.content.to_vec();
        if let Some(last) = content.last_mut() {
            *last ^= 1;
        }
        altered.content = Bytes::from(content);
        let node = receiver(Some(signing()));
        let mut feed = node.feed.subscribe();
        let answer = node.deliver_one(pb::DeliverRequest {
            envelopes: vec![signed.clone(), altered],
            ..Default::default()
        });
        let outcomes = outcomes(&answer);
        assert_eq!(
            outcomes,
            [
                (pb::DeliveryOutcome::Accepted as i32, id.as_str()),
                (pb::DeliveryOutcome::Rejected as i32, "")
            ]
        );
        assert!(
            answer.results[1].reason.contains("signature"),
            "{}",
            answer.results[1].reason
        );
        let fed: Vec<(String, bool)> = std::iter::from_fn(|| feed.try_recv().ok())
            .map(|i| (i.content.map(|c| c.id).unwrap_or_default(), i.verified))
            .collect();
        assert_eq!(fed, [(id, true)], "fed once, its signature checked");
        // A receiver that knows another key refuses it.
        let other = Signing::from_seed(&hex::encode([8u8; 64])).expect("a key");
        let stranger = receiver(Some(other));
        let answer = stranger.deliver_one(pb::DeliverRequest {
            envelopes: vec![signed],
            ..Default::default()
        });
        assert_eq!(
            answer.results[0].outcome,
            pb::DeliveryOutcome::Rejected as i32
        );
        // The seed must be 64 bytes of hex.
        assert!(Signing::from_seed("abcd").is_err());
        assert!(Signing::from_seed(&"zz".repeat(64)).is_err());
    }
}
