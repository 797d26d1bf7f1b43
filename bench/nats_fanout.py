"""The NATS JetStream side of bench/compare-nats: the workload of `bluewire bench fanout`
(one publisher, --receivers recipient organisations, four by default) on the equivalent
NATS topology, on loopback.

Topology, built afresh in a temporary directory for every run and removed after it:
  - a throwaway CA and ECDSA P-256 certificates made with openssl;
  - a hub nats-server with JetStream (file storage in the temporary directory) and a
    leaf-node listener that requires client certificates (mutual TLS);
  - one leaf nats-server per recipient organisation, each connected to the hub
    over mutual TLS; with the default --nats-client-tls mutual, clients must present a
    certificate too, as Bluewire's analysts do;
  - a stream (file storage, subjects bench.>) and one durable push consumer per recipient,
    explicit acknowledgements;
  - the publisher (this process) connected to the hub, and one subscriber process per
    recipient (nats_subscriber.py) connected to its own leaf.

Phases, after a short warm-up that lets the subscribers' interest reach the hub:
  1. throughput: --messages publishes with --concurrency in flight, each awaiting its
     PubAck (stored by the hub); the clock stops when the last message has reached every
     subscriber;
  2. for each --rates R: publishes paced at R msg/s for --seconds; latency is from the
     start of the publish call to the arrival at the last subscriber.
Every message carries its index in its first 8 bytes; the subscribers timestamp arrivals
with CLOCK_MONOTONIC, which is system-wide on Linux, so publisher and subscriber times
subtract directly.

Run alone:
  target/bench-venv/bin/python bench/nats_fanout.py --messages 2000 --rates 1000 --seconds 3
"""

import argparse
import array
import asyncio
import ctypes
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

# nats-py's protocol returns True from eof_received() on TLS connections, which asyncio
# reports as a warning when the connection closes: harmless, and noise in the output.
logging.getLogger("asyncio").addFilter(lambda record: "eof_received()" not in record.getMessage())

# Receivers in issue #12's workload (1 → 4), and the most `bluewire bench fanout` takes.
ISSUE_RECEIVERS = 4
MAX_RECEIVERS = 16
STREAM = "BENCH"
SUBJECT = "bench.fanout"
INDEX_BYTES = 8
WARMUP_MESSAGES = 100
# Time bounds, as in the Rust bench: 120 s for the throughput phase to drain, 60 s for a
# paced phase.
THROUGHPUT_DRAIN_S = 120
PACED_DRAIN_S = 60
STARTUP_S = 20
PUBLISH_TIMEOUT_S = 10


@dataclass(frozen=True)
class Workload:
    messages: int
    concurrency: int
    rates: tuple
    seconds: int
    size: int
    receivers: int = ISSUE_RECEIVERS

    @property
    def recipients(self) -> tuple:
        """The recipients' names, as `bluewire bench fanout` names its receiving nodes."""
        return tuple(f"recv-{chr(ord('b') + i)}" for i in range(self.receivers))


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messages", type=int, default=5000, help="messages in the throughput phase (default 5000)")
    p.add_argument("--concurrency", type=int, default=64, help="publishes in flight in the throughput phase (default 64)")
    p.add_argument("--rates", default="1000,2000", help="paced rates of the latency phases, msg/s, comma-separated (default 1000,2000)")
    p.add_argument("--seconds", type=int, default=5, help="length of each latency phase, s (default 5)")
    p.add_argument("--size", type=int, default=1024, help="payload size in bytes (default 1024)")
    p.add_argument("--receivers", type=int, default=ISSUE_RECEIVERS,
                   help=f"recipient organisations, each with one subscriber, 1 to {MAX_RECEIVERS} "
                        f"(default {ISSUE_RECEIVERS})")
    p.add_argument(
        "--nats-client-tls",
        choices=("mutual", "none"),
        default="mutual",
        help="TLS between the NATS clients and their servers (the leaf links are always mutual TLS; default mutual)",
    )


def workload_from(a: argparse.Namespace) -> Workload:
    rates = tuple(int(r) for r in a.rates.split(",") if r.strip())
    w = Workload(a.messages, a.concurrency, rates, a.seconds, a.size, a.receivers)
    if w.messages < 1 or w.concurrency < 1 or w.seconds < 1 or not rates or min(rates) < 1:
        raise SystemExit("--messages, --concurrency, --seconds and every rate must be at least 1")
    if not 1 <= w.receivers <= MAX_RECEIVERS:
        raise SystemExit(f"--receivers must be 1 to {MAX_RECEIVERS}")
    if w.size < INDEX_BYTES:
        raise SystemExit(f"--size must be at least {INDEX_BYTES} (the message index)")
    return w


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, from /proc; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """CPU per message of the hub, the leaves and the clients over one phase, from /proc, in
    the shape of the Bluewire bench's figures (the hub is the origin, a leaf a receiver)."""

    def __init__(self, servers: "Servers", subs: list):
        self.hub = [p.pid for name, p in servers.procs if name == "hub"]
        self.leaves = [p.pid for name, p in servers.procs if name != "hub"]
        self.clients = [os.getpid()] + [s.proc.pid for s in subs]
        self.before = self._now()

    def _now(self) -> tuple:
        return tuple(sum(cpu_seconds(p) for p in group) for group in (self.hub, self.leaves, self.clients))

    def stop(self) -> tuple:
        """CPU seconds since the meter started: the hub, the leaves, the clients."""
        return tuple(max(0.0, a - b) for a, b in zip(self._now(), self.before))

    def per_message(self, messages: int, spent: tuple = None) -> dict:
        """`spent` (default: since the meter started) in µs per message: the hub, each leaf
        (mean), all servers together, and all client processes (publisher and subscribers)
        together."""
        spent = spent if spent is not None else self.stop()
        hub, leaves, clients = (s * 1e6 / max(messages, 1) for s in spent)
        return {"server_cpu_us_per_msg_hub": round(hub),
                "server_cpu_us_per_msg_leaf": round(leaves / max(len(self.leaves), 1)),
                "server_cpu_us_per_msg": round(hub + leaves),
                "client_cpu_us_per_msg": round(clients)}


def percentile(sorted_values: list, p: float) -> float:
    """The Rust bench's rule: index round((n - 1) * p), halves rounded up. None (JSON null,
    as the Rust bench's NaN becomes) when there are no samples."""
    if not sorted_values:
        return None
    return sorted_values[min(int((len(sorted_values) - 1) * p + 0.5), len(sorted_values) - 1)]


def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the benchmark is killed before it can clean up."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_cleanly_on_signals() -> None:
    """Make Ctrl-C and SIGTERM alike stop the benchmark through its cleanup code (within
    asyncio.run, SIGINT cancels the run), even where SIGINT was inherited as ignored, as
    in a job started in the background by a non-interactive shell."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(d: Path) -> Certificates:
    """A throwaway CA, one certificate for all the servers (server and client use: a leaf
    is the TLS client of the hub) and one for the Python clients; ECDSA P-256."""
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca, ca_key = d / "ca.pem", d / "ca.key"
    _openssl("req", "-x509", *curve, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
             "-subj", "/CN=bluewire bench NATS CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(name: str, usage: str) -> tuple:
        key, csr, cert, ext = (d / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
        ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("req", *curve, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-set_serial", str(int.from_bytes(name.encode(), "big")), "-days", "2",
                 "-extfile", str(ext), "-out", str(cert))
        return cert, key

    server_cert, server_key = issue("nats-server", "serverAuth,clientAuth")
    client_cert, client_key = issue("bench-client", "clientAuth")
    return Certificates(ca, server_cert, server_key, client_cert, client_key)


def _tls_block(c: Certificates, require_client_cert: bool = False) -> str:
    return (f'tls {{ cert_file: "{c.server_cert}", key_file: "{c.server_key}", ca_file: "{c.ca}"'
            f'{", verify: true" if require_client_cert else ""}, timeout: 5 }}')


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def sync_interval_always_supported(root: Path) -> bool:
    """Whether this nats-server accepts `sync_interval: always` (fsync every write); 2.9 does not."""
    conf = root / "probe.conf"
    conf.write_text(f'jetstream {{ store_dir: "{root / "probe"}", sync_interval: always }}\n')
    return subprocess.run(["nats-server", "-t", "-c", str(conf)], capture_output=True, timeout=30).returncode == 0


class Servers:
    """nats-server processes, each with its config, log and ports file in the run's directory."""

    def __init__(self, root: Path):
        self.root = root
        self.procs = []

    def start(self, name: str, config: str) -> str:
        """Start one server and return its monitoring URL once it answers."""
        conf, log, ports = self.root / f"{name}.conf", self.root / f"{name}.log", self.root / f"{name}-ports"
        conf.write_text(config)
        ports.mkdir()
        proc = subprocess.Popen(
            ["nats-server", "-c", str(conf), "-l", str(log), "--ports_file_dir", str(ports)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.procs.append((name, proc))
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"nats-server {name} exited at start-up:\n{self.log_tail(name)}")
            files = list(ports.glob("*.ports"))
            if files:
                try:
                    url = json.loads(files[0].read_text())["monitoring"][0]
                    _get_json(url + "/varz")
                    return url
                except (ValueError, KeyError, OSError):
                    pass  # written but not complete yet, or not answering yet
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {name} did not start within {STARTUP_S} s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / f"{name}.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


class Subscriber:
    """One nats_subscriber.py process and what it has reported on its stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr: Path, phases: int):
        self.name = name
        self.proc = proc
        self.stderr = stderr
        self.ready = asyncio.Event()
        self.done = [asyncio.Event() for _ in range(phases)]
        self.written = asyncio.Event()
        self.redeliveries = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.proc.stdout:
            word, _, arg = raw.decode().strip().partition(" ")
            if word == "ready":
                self.ready.set()
            elif word == "done":
                self.done[int(arg)].set()
            elif word == "written":
                self.redeliveries = int(arg)
                self.written.set()

    def stderr_tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-2000:]

    async def finish(self) -> None:
        self.proc.stdin.write(b"finish\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.reader.cancel()


async def wait_for_all(subs: list, event_of, timeout: float) -> bool:
    """Wait until `event_of(sub)` is set for every subscriber: True, or False at the
    timeout; raise if a subscriber process ends first."""
    waits = [asyncio.create_task(event_of(s).wait()) for s in subs]
    try:
        pending = set(waits) | {s.reader for s in subs}
        deadline = time.monotonic() + timeout
        while not all(w.done() for w in waits):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for s in subs:
                if s.reader in done and not event_of(s).is_set():
                    raise RuntimeError(f"subscriber {s.name} exited (status {await s.proc.wait()}):\n"
                                       f"{s.stderr_tail()}")
        return True
    finally:
        for w in waits:
            w.cancel()


def payload(i: int, filler: bytes) -> bytes:
    return i.to_bytes(INDEX_BYTES, "big") + filler


async def publish_in_flight(js, first: int, count: int, concurrency: int, filler: bytes) -> None:
    """`count` publishes from index `first`, `concurrency` awaiting their PubAck at a time."""
    indices = iter(range(first, first + count))

    async def worker() -> None:
        for i in indices:
            await js.publish(SUBJECT, payload(i, filler), timeout=PUBLISH_TIMEOUT_S)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))


async def publish_paced(js, first: int, count: int, rate: int, filler: bytes) -> tuple:
    """`count` publishes from index `first`, started at `rate` per second without waiting
    for acknowledgements (a late start is caught up, as tokio's sleep_until does in the
    Rust bench). Returns the start time of each publish (ns), the sorted publish-ack
    latencies (ms), how many publishes failed, and the achieved rate: the rate the
    publishes were started at, as the Rust bench reports it."""
    started = [0] * count
    acks = []

    async def one(k: int) -> None:
        await js.publish(SUBJECT, payload(first + k, filler), timeout=PUBLISH_TIMEOUT_S)
        acks.append((time.monotonic_ns() - started[k]) / 1e6)

    interval = 1e9 / rate
    t0 = time.monotonic_ns()
    tasks = []
    for k in range(count):
        delay = (t0 + k * interval - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        started[k] = time.monotonic_ns()
        tasks.append(asyncio.create_task(one(k)))
    achieved = count / ((time.monotonic_ns() - t0) / 1e9)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = sum(isinstance(r, Exception) for r in results)
    return started, sorted(acks), failed, achieved


async def start_servers(servers: Servers, certs: Certificates, client_tls: str, recipients: tuple) -> tuple:
    """The hub and one leaf per recipient; returns the hub's /varz, its monitoring URL and each
    recipient's leaf client URL, once every leaf is connected to the hub."""
    client_block = _tls_block(certs, require_client_cert=True) if client_tls == "mutual" else ""
    scheme = "tls" if client_tls == "mutual" else "nats"
    hub_monitor = servers.start("hub", f"""
server_name: hub
listen: 127.0.0.1:-1
http: 127.0.0.1:-1
{client_block}
jetstream {{ store_dir: "{servers.root / 'jetstream'}" }}
leafnodes {{ listen: 127.0.0.1:-1, {_tls_block(certs, require_client_cert=True)} }}
""")
    hub = _get_json(hub_monitor + "/varz")
    leaf_urls = {}
    for r in recipients:
        # As the TLS client of the hub, a leaf presents the certificate and verifies the hub's.
        monitor = servers.start(f"leaf-{r}", f"""
server_name: leaf-{r}
listen: 127.0.0.1:-1
http: 127.0.0.1:-1
{client_block}
leafnodes {{ remotes: [ {{ url: "tls://127.0.0.1:{hub['leaf']['port']}", {_tls_block(certs)} }} ] }}
""")
        leaf_urls[r] = f"{scheme}://127.0.0.1:{_get_json(monitor + '/varz')['port']}"
    deadline = time.monotonic() + STARTUP_S
    while len(_get_json(hub_monitor + "/leafz").get("leafs") or []) < len(recipients):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the leaf nodes did not connect to the hub:\n{servers.log_tail('hub')}")
        await asyncio.sleep(0.05)
    return hub, f"{scheme}://127.0.0.1:{hub['port']}", leaf_urls


async def start_subscribers(root: Path, certs: Certificates, client_tls: str, leaf_urls: dict, ends: list) -> list:
    """One subscriber process per leaf, in `leaf_urls`' order."""
    subs = []
    script = Path(__file__).resolve().parent / "nats_subscriber.py"
    tls_args = ["--ca", str(certs.ca), "--cert", str(certs.client_cert), "--key", str(certs.client_key)] \
        if client_tls == "mutual" else []
    for r in leaf_urls:
        stderr = root / f"subscriber-{r}.stderr"
        with open(stderr, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), "--url", leaf_urls[r], *tls_args,
                "--deliver-subject", f"deliver.{r}", "--phase-ends", ",".join(map(str, ends)),
                "--out", str(root / f"arrivals-{r}"),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        subs.append(Subscriber(r, proc, stderr, len(ends)))
    return subs


def arrivals_everywhere(root: Path, subs: list, total: int) -> array.array:
    """Per message index, its arrival at the last subscriber to get it, or 0 if any
    subscriber lacks it."""
    everywhere = None
    for s in subs:
        mine = array.array("q")
        with open(root / f"arrivals-{s.name}", "rb") as f:
            mine.fromfile(f, total)
        everywhere = mine if everywhere is None else array.array(
            "q", (max(a, b) if a and b else 0 for a, b in zip(everywhere, mine)))
    return everywhere


async def run(w: Workload, client_tls: str = "mutual") -> dict:
    """One complete NATS run of workload `w`, on a topology of its own; returns its figures."""
    root = Path(tempfile.mkdtemp(prefix="bluewire-bench-nats-"))
    servers = Servers(root)
    subs = []
    nc = None
    try:
        print(f"  nats: certificates, hub and {w.receivers} leaf node(s)…", file=sys.stderr)
        certs = make_certificates(root)
        sync_always_supported = sync_interval_always_supported(root)
        hub, hub_url, leaf_urls = await start_servers(servers, certs, client_tls, w.recipients)

        tls = None
        if client_tls == "mutual":
            tls = ssl.create_default_context(cafile=str(certs.ca))
            tls.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        nc = await nats.connect(hub_url, tls=tls, max_reconnect_attempts=0, connect_timeout=10)
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        await js.add_stream(StreamConfig(name=STREAM, subjects=["bench.>"], storage=StorageType.FILE, num_replicas=1))
        for r in w.recipients:
            # Push consumers: the hub sends each message to the deliver subject as soon as
            # it is stored, and the subscriber needs no JetStream API call (which a client
            # of a leaf could not reach without a JetStream domain). The deliver subject
            # must stay outside the stream's subjects.
            await js.add_consumer(STREAM, ConsumerConfig(durable_name=r, deliver_subject=f"deliver.{r}",
                                                         ack_policy=AckPolicy.EXPLICIT,
                                                         deliver_policy=DeliverPolicy.ALL))
        max_ack_pending = (await js.consumer_info(STREAM, w.recipients[0])).config.max_ack_pending

        # Message indices: warm-up, then throughput, then one range per paced rate.
        counts = [WARMUP_MESSAGES, w.messages] + [r * w.seconds for r in w.rates]
        ends = [sum(counts[: k + 1]) for k in range(len(counts))]
        starts = [0] + ends[:-1]
        subs = await start_subscribers(root, certs, client_tls, leaf_urls, ends)
        if not await wait_for_all(subs, lambda s: s.ready, STARTUP_S):
            raise RuntimeError(f"the subscribers were not ready within {STARTUP_S} s")

        filler = b"x" * (w.size - INDEX_BYTES)
        await publish_in_flight(js, 0, WARMUP_MESSAGES, w.concurrency, filler)
        if not await wait_for_all(subs, lambda s: s.done[0], PACED_DRAIN_S):
            raise RuntimeError("the warm-up messages did not reach every subscriber")

        print(f"  nats: throughput phase, {w.messages} messages, {w.concurrency} in flight…", file=sys.stderr)
        throughput_meter = CpuMeter(servers, subs)
        t_start = time.monotonic_ns()
        await publish_in_flight(js, starts[1], w.messages, w.concurrency, filler)
        t_acked = time.monotonic_ns()
        await wait_for_all(subs, lambda s: s.done[1], THROUGHPUT_DRAIN_S)
        t_gave_up = time.monotonic_ns()
        # Divided by the messages delivered everywhere, once known (as the Bluewire side does).
        throughput_cpu = throughput_meter.stop()

        paced_raw = []
        paced_cpu = []
        for k, rate in enumerate(w.rates, start=2):
            print(f"  nats: latency phase, {rate} msg/s for {w.seconds} s…", file=sys.stderr)
            meter = CpuMeter(servers, subs)
            paced_raw.append(await publish_paced(js, starts[k], counts[k], rate, filler))
            await wait_for_all(subs, lambda s: s.done[k], PACED_DRAIN_S)
            paced_cpu.append(meter.per_message(counts[k]))

        # Acknowledgements still outstanding at the hub: near 0 shows the subscribers'
        # acks cross the leaf links (they are fire-and-forget, so a few may be in flight).
        ack_pending = sum([(await js.consumer_info(STREAM, r)).num_ack_pending for r in w.recipients])
        await nc.close()
        nc = None
        for s in subs:
            await s.finish()
        if not await wait_for_all(subs, lambda s: s.written, 30):
            raise RuntimeError("the subscribers did not write their arrival times")
        everywhere = arrivals_everywhere(root, subs, ends[-1])
    finally:
        if nc is not None:
            await nc.close()
        for s in subs:
            await s.stop()
        servers.stop()
        shutil.rmtree(root, ignore_errors=True)

    tp = everywhere[starts[1]:ends[1]]
    delivered = sum(1 for t in tp if t)
    elapsed = ((max(tp) if delivered == w.messages else t_gave_up) - t_start) / 1e9
    paced = []
    for k, (rate, (started, acks, failed, achieved), cpu) in enumerate(zip(w.rates, paced_raw, paced_cpu), start=2):
        lat = sorted((everywhere[starts[k] + j] - t0) / 1e6 for j, t0 in enumerate(started) if everywhere[starts[k] + j])
        paced.append({
            "rate": rate, "achieved_rate": round(achieved), "samples": len(lat),
            "p50": percentile(lat, 0.50), "p99": percentile(lat, 0.99), "max": lat[-1] if lat else None,
            "publish_ack_p50": percentile(acks, 0.50), "publish_ack_p99": percentile(acks, 0.99),
            "publish_failures": failed, **cpu,
        })
    return {
        "topology": {
            "servers": f"hub with JetStream + one leaf node per recipient ({w.receivers}), loopback",
            "leaf_links": "mutual TLS, ECDSA P-256",
            "client_links": "mutual TLS, ECDSA P-256" if client_tls == "mutual" else "plain TCP",
            "stream": "file storage, 1 replica, subjects bench.>",
            "consumers": "one durable push consumer per recipient, explicit ack, each message acked by its subscriber",
            "consumer_max_ack_pending": max_ack_pending,
            "jetstream_sync": "server default: periodic fsync, not on every write ("
                              + ("sync_interval: always exists in this version but is not used, as in issue #12's "
                                 "reference measurement)" if sync_always_supported
                                 else "this version has no sync_interval option)"),
            "publisher": "nats-py, one process, connected to the hub",
            "subscribers": f"{w.receivers} nats-py processes, each connected to its own leaf",
            "warmup_messages": WARMUP_MESSAGES,
        },
        "nats_server_version": hub["version"],
        "throughput": {
            "delivered_everywhere": delivered, "elapsed_s": elapsed,
            "publish_acked_s": (t_acked - t_start) / 1e9, "msg_per_s": round(delivered / elapsed),
            **throughput_meter.per_message(delivered, throughput_cpu),
        },
        "paced": paced,
        "redeliveries_ignored": sum(s.redeliveries for s in subs),
        "acks_pending_at_end": ack_pending,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_arguments(p)
    p.add_argument("--output", choices=("table", "json"), default="table")
    a = p.parse_args()
    w = workload_from(a)
    stop_cleanly_on_signals()
    try:
        result = asyncio.run(run(w, a.nats_client_tls))
    except KeyboardInterrupt:
        raise SystemExit("interrupted; servers and subscribers stopped")
    if a.output == "json":
        print(json.dumps(result))
        return
    t = result["throughput"]
    print(f"NATS JetStream {result['nats_server_version']}: {t['delivered_everywhere']}/{w.messages} delivered "
          f"at all {w.receivers} subscribers in {t['elapsed_s']:.2f} s = {t['msg_per_s']} msg/s "
          f"(publishes acked in {t['publish_acked_s']:.2f} s)")
    for r in result["paced"]:
        ms = {k: "—" if r[k] is None else f"{r[k]:.2f}" for k in ("p50", "p99", "max", "publish_ack_p50", "publish_ack_p99")}
        print(f"latency at {r['achieved_rate']} msg/s paced (target {r['rate']}): p50 {ms['p50']} ms, "
              f"p99 {ms['p99']} ms, max {ms['max']} ms ({r['samples']} samples); publish ack p50 "
              f"{ms['publish_ack_p50']} ms, p99 {ms['publish_ack_p99']} ms")


if __name__ == "__main__":
    main()
