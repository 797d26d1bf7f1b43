"""Side-by-side fan-out benchmark: Bluewire against NATS JetStream (issue #12).

Runs `bluewire bench fanout` and the same workload on an equivalent NATS JetStream
topology (nats_fanout.py) alternately, --pairs times: Bluewire first in odd pairs, NATS
first in even pairs, so that drift on a shared machine falls on both sides alike. Reports
throughput and paced latency for both and their ratios (Bluewire / NATS) per pair, and
their range across pairs. A benchmark, not a test: it asserts nothing. With --floor, the
Bluewire side is `bluewire bench floor`: the same calls over the same mutual TLS with
nothing behind them (no store, no signatures, no routing); with --floor-sign, the floor
with each message signed at the origin and checked at each receiver (`bench floor --sign`).

Normally started by bench/compare-nats, which installs what it needs (add --no-build
there to measure the existing target/release/bluewire as it is).
"""

import argparse
import asyncio
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import nats_fanout
from nats_fanout import Workload

REPO = Path(__file__).resolve().parent.parent
# One `bluewire bench fanout` run takes about half a minute; its own bounds are 120 s for
# the throughput phase to drain and 60 s per paced phase.
BLUEWIRE_TIMEOUT_S = 900
# clap's complaint when a build of the CLI takes --rate only once.
SINGLE_RATE_ERROR = "cannot be used multiple times"


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group led by `proc` (a bench and its nodes): SIGTERM, then SIGKILL
    to whatever is left of it after 15 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            proc.poll()  # reap the bench, so that its group empties once its nodes are gone
            os.killpg(proc.pid, 0)  # ProcessLookupError once the group is empty
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_bluewire(binary: Path, w: Workload, rates: tuple, store_sync: str = "always",
                 linger_us: Optional[int] = None, floor: bool = False, sign: bool = False,
                 paced_stream: bool = False, client_threads: Optional[int] = None) -> tuple:
    """One `bluewire bench fanout` run (`bench floor` with `floor`: the transport alone, and
    with `sign` the signatures too);
    its progress goes to our stderr as it comes.
    Returns (parsed JSON or None, its stderr, exit status)."""
    cmd = [str(binary), "--output", "json", "bench", "floor" if floor else "fanout", "--messages", str(w.messages),
           "--concurrency", str(w.concurrency), "--seconds", str(w.seconds), "--size", str(w.size),
           "--receivers", str(w.receivers)]
    if store_sync != "always" and not floor:
        # Builds from before `--store-sync` sync every commit and refuse the option.
        cmd += ["--store-sync", store_sync]
    if floor and sign:
        cmd += ["--sign"]
    if linger_us is not None and not floor:
        # Builds from before `--linger-us` refuse it: given only when asked for.
        cmd += ["--linger-us", str(linger_us)]
    if paced_stream and not floor:
        cmd += ["--paced-stream"]
    if client_threads is not None:
        # Builds from before `--client-threads` refuse it (they ran their clients on one
        # thread per core): given only when asked for.
        cmd += ["--client-threads", str(client_threads)]
    for r in rates:
        cmd += ["--rate", str(r)]
    # The federation goes in a directory of ours, removed even when the bench is stopped
    # early (the bench removes its default one only when it finishes).
    with tempfile.TemporaryDirectory(prefix="bluewire-bench-") as work, tempfile.TemporaryFile() as out:
        cmd += ["--dir", str(Path(work) / "federation")]
        # In a process group of its own, so that stopping it early also stops its node
        # processes: a bench killed by a signal does not get to stop them itself.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        timer = threading.Timer(BLUEWIRE_TIMEOUT_S, stop_group, (proc,))
        timer.start()
        err = []
        try:
            for line in proc.stderr:
                err.append(line)
                print(f"  bluewire: {line.rstrip()}", file=sys.stderr)
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                stop_group(proc)
        out.seek(0)
        text = out.read().decode()
    try:
        result = json.loads(text) if text.strip() else None
    except ValueError:
        result = None
    return result, "".join(err), proc.returncode


def bluewire_fanout(binary: Path, w: Workload, store_sync: str = "always", linger_us: Optional[int] = None,
                    floor: bool = False, sign: bool = False, paced_stream: bool = False,
                    client_threads: Optional[int] = None) -> dict:
    """Bluewire's figures for workload `w`, in the shape nats_fanout.run returns."""
    result, err, status = run_bluewire(binary, w, w.rates, store_sync, linger_us, floor, sign, paced_stream,
                                       client_threads)
    if status != 0 and result is not None:
        print(f"  (bluewire exited with status {status} after printing its figures)", file=sys.stderr)
    if result is not None and "paced" in result:
        runs = [(result, status)]
        paced = result["paced"]
        layout = "one run, paced phases in `paced`"
    else:
        # A build from before `--rate` could be repeated: one run per rate, the paced
        # figures in `latency_ms`.
        if result is None and not (SINGLE_RATE_ERROR in err and len(w.rates) > 1):
            raise RuntimeError(f"{binary} bench fanout failed (exit status {status}):\n{err[-3000:]}")
        print("  (this build takes one --rate: one bluewire run per rate)", file=sys.stderr)
        runs = [(result, status)] if result is not None else []
        for r in w.rates[len(runs):]:
            one, err, status = run_bluewire(binary, w, (r,), store_sync, linger_us, floor, sign, paced_stream,
                                            client_threads)
            if one is None:
                raise RuntimeError(f"{binary} bench fanout --rate {r} failed (exit status {status}):\n{err[-3000:]}")
            if status != 0:
                print(f"  (bluewire exited with status {status} after printing its figures)", file=sys.stderr)
            runs.append((one, status))
        paced = [{"rate": r, **{k: run["latency_ms"].get(k) for k in
                                ("achieved_rate", "samples", "p50", "p99", "max", "publish_ack_p50", "publish_ack_p99")}}
                 for r, (run, _) in zip(w.rates, runs)]
        layout = "one run per rate (`latency_ms`); throughput from the first"
    # The nodes' CPU per message, named as the NATS side names its servers' (the origin is
    # the hub, each receiver a leaf); a build from before paced CPU figures has none.
    throughput = dict(runs[0][0]["throughput"])
    if "node_cpu_us_per_msg" in throughput:
        throughput["server_cpu_us_per_msg"] = throughput["node_cpu_us_per_msg"]
    paced = [dict(p) for p in paced]
    for p in paced:
        if "node_cpu_us_per_msg_origin" in p:
            p["server_cpu_us_per_msg"] = p["node_cpu_us_per_msg_origin"] \
                + w.receivers * p["node_cpu_us_per_msg_receiver"]
    return {
        "throughput": throughput,
        "paced": paced,
        "json_layout": layout,
        # A run that printed its figures but exited non-zero (e.g. not every message
        # arrived within its time bound) still counts; its status says so.
        "exit_status": [s for _, s in runs],
        "raw": [r for r, _ in runs],
    }


def ratio(a, b):
    return a / b if a and b else None


def ratios(bw: dict, nats: dict) -> dict:
    """Bluewire / NATS: above 1 is better for throughput, worse for latency."""
    by_rate = {p["rate"]: p for p in nats["paced"]}
    return {
        "throughput": ratio(bw["throughput"]["msg_per_s"], nats["throughput"]["msg_per_s"]),
        "throughput_server_cpu": ratio(bw["throughput"].get("server_cpu_us_per_msg"),
                                       nats["throughput"].get("server_cpu_us_per_msg")),
        "paced": [{"rate": p["rate"], **{k: ratio(p.get(k), by_rate[p["rate"]].get(k))
                                         for k in ("p50", "p99", "server_cpu_us_per_msg", "client_cpu_us_per_msg")}}
                  for p in bw["paced"] if p["rate"] in by_rate],
    }


def span(values: list) -> dict:
    values = [v for v in values if v is not None]
    return {"min": min(values), "max": max(values)} if values else {"min": None, "max": None}


def summarise(pairs: list, w: Workload) -> dict:
    def paced(side: str, rate: int, key: str) -> list:
        return [next((p.get(key) for p in pair[side]["paced"] if p["rate"] == rate), None) for pair in pairs]

    def paced_ratio(rate: int, key: str) -> list:
        return [next((p.get(key) for p in pair["ratios"]["paced"] if p["rate"] == rate), None) for pair in pairs]

    summary = {
        "pairs": len(pairs),
        "receivers": w.receivers,
        "throughput_msg_per_s": {"bluewire": span([p["bluewire"]["throughput"]["msg_per_s"] for p in pairs]),
                                 "nats": span([p["nats"]["throughput"]["msg_per_s"] for p in pairs])},
        "throughput_ratio": span([p["ratios"]["throughput"] for p in pairs]),
        "throughput_server_cpu_us_per_msg": {
            side: span([p[side]["throughput"].get("server_cpu_us_per_msg") for p in pairs])
            for side in ("bluewire", "nats")},
        "paced": [{"rate": r,
                   **{f"{side}_{key}": span(paced(side, r, key))
                      for side in ("bluewire", "nats")
                      for key in ("p50", "p99", "publish_ack_p99", "server_cpu_us_per_msg",
                                  "client_cpu_us_per_msg")},
                   "p50_ratio": span(paced_ratio(r, "p50")), "p99_ratio": span(paced_ratio(r, "p99"))}
                  for r in w.rates],
    }
    # Issue #12's targets, counted over the pairs.
    targets = {"throughput_ratio_at_least_1": sum((p["ratios"]["throughput"] or 0) >= 1.0 for p in pairs)}
    if 1000 in w.rates:
        bw_p99, ratio_p99 = paced("bluewire", 1000, "p99"), paced_ratio(1000, "p99")
        targets["p99_at_1000_below_5_ms"] = sum(v is not None and v < 5.0 for v in bw_p99)
        targets["p99_at_1000_no_worse_than_nats"] = sum(v is not None and v <= 1.0 for v in ratio_p99)
    summary["targets_met_in_pairs"] = targets
    return summary


def command_output(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(binary: Path) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = command_output("git", "rev-parse", "--short", "HEAD")
    if command_output("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
        "nats_server_version": command_output("nats-server", "--version"),
        "nats_py_version": importlib.metadata.version("nats-py"),
        "python_version": platform.python_version(),
        "bluewire_commit": commit,
        "bluewire_binary": str(binary),
        "bluewire_binary_modified_utc": datetime.datetime.fromtimestamp(
            binary.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def fmt(v, digits: int = 2) -> str:
    if v is None or v != v:  # missing, or NaN (no samples)
        return "—"
    return f"{v:,.{digits}f}"


def fmt_span(s: dict, digits: int = 2) -> str:
    return f"{fmt(s['min'], digits)}–{fmt(s['max'], digits)}"


def print_pair(pair: dict) -> None:
    bw, nats, rat = pair["bluewire"], pair["nats"], pair["ratios"]
    print(f"\npair {pair['pair']} ({' then '.join(pair['order'])})")
    print(f"  {'':34}{'Bluewire':>12}{'NATS JetStream':>16}{'Bluewire/NATS':>15}")
    print(f"  {'throughput, msg/s':34}{fmt(bw['throughput']['msg_per_s'], 0):>12}"
          f"{fmt(nats['throughput']['msg_per_s'], 0):>16}{fmt(rat['throughput']):>15}")
    label = "  servers' CPU per message, µs"
    print(f"  {label:34}{fmt(bw['throughput'].get('server_cpu_us_per_msg'), 0):>12}"
          f"{fmt(nats['throughput'].get('server_cpu_us_per_msg'), 0):>16}{fmt(rat.get('throughput_server_cpu')):>15}")
    label = "  clients' CPU per message, µs"
    print(f"  {label:34}{fmt(bw['throughput'].get('client_cpu_us_per_msg'), 0):>12}"
          f"{fmt(nats['throughput'].get('client_cpu_us_per_msg'), 0):>16}")
    nats_by_rate = {p["rate"]: p for p in nats["paced"]}
    rat_by_rate = {p["rate"]: p for p in rat["paced"]}
    for p in bw["paced"]:
        n, r = nats_by_rate.get(p["rate"], {}), rat_by_rate.get(p["rate"], {})
        rows = [("achieved rate, msg/s", "achieved_rate", 0), ("end-to-end p50, ms", "p50", 2),
                ("end-to-end p99, ms", "p99", 2), ("end-to-end max, ms", "max", 2),
                ("publish ack p99, ms", "publish_ack_p99", 2),
                ("servers' CPU per message, µs", "server_cpu_us_per_msg", 0),
                ("clients' CPU per message, µs", "client_cpu_us_per_msg", 0)]
        for label, key, digits in rows:
            name = f"{p['rate']} msg/s {label}" if key == "achieved_rate" else f"  {label}"
            print(f"  {name:34}{fmt(p.get(key), digits):>12}{fmt(n.get(key), digits):>16}{fmt(r.get(key)):>15}")


def print_summary(s: dict) -> None:
    print(f"\nsummary over {s['pairs']} pair(s), min–max; ratios are Bluewire / NATS "
          "(above 1: Bluewire faster in throughput, slower in latency)")
    t = s["throughput_msg_per_s"]
    c = s["throughput_server_cpu_us_per_msg"]
    print(f"  throughput: Bluewire {fmt_span(t['bluewire'], 0)} msg/s, NATS {fmt_span(t['nats'], 0)} msg/s, "
          f"ratio {fmt_span(s['throughput_ratio'])}; servers' CPU per message Bluewire {fmt_span(c['bluewire'], 0)} µs, "
          f"NATS {fmt_span(c['nats'], 0)} µs")
    for p in s["paced"]:
        print(f"  {p['rate']} msg/s: p50 Bluewire {fmt_span(p['bluewire_p50'])} ms, NATS {fmt_span(p['nats_p50'])} ms, "
              f"ratio {fmt_span(p['p50_ratio'])}; p99 Bluewire {fmt_span(p['bluewire_p99'])} ms, "
              f"NATS {fmt_span(p['nats_p99'])} ms, ratio {fmt_span(p['p99_ratio'])}; servers' CPU per message "
              f"Bluewire {fmt_span(p['bluewire_server_cpu_us_per_msg'], 0)} µs, "
              f"NATS {fmt_span(p['nats_server_cpu_us_per_msg'], 0)} µs; clients' "
              f"Bluewire {fmt_span(p['bluewire_client_cpu_us_per_msg'], 0)} µs, "
              f"NATS {fmt_span(p['nats_client_cpu_us_per_msg'], 0)} µs")
    t = s["targets_met_in_pairs"]
    n = s["pairs"]
    label = "issue #12 targets" if s["receivers"] == nats_fanout.ISSUE_RECEIVERS else \
        f"issue #12 targets (set for {nats_fanout.ISSUE_RECEIVERS} receivers; this workload has {s['receivers']})"
    line = f"  {label}, pairs meeting them: throughput ratio ≥ 1.0 in {t['throughput_ratio_at_least_1']}/{n}"
    if "p99_at_1000_below_5_ms" in t:
        line += (f"; p99 at 1,000 msg/s < 5 ms in {t['p99_at_1000_below_5_ms']}/{n}, "
                 f"no worse than NATS in {t['p99_at_1000_no_worse_than_nats']}/{n}")
    print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=3, help="Bluewire/NATS pairs, alternating which goes first (default 3)")
    nats_fanout.add_workload_arguments(p)
    p.add_argument("--output", choices=("table", "json"), default="table")
    p.add_argument("--bluewire", type=Path, default=REPO / "target/release/bluewire", help="the CLI binary to measure")
    p.add_argument("--store-sync", choices=("always", "interval"), default="always",
                   help="Bluewire's [store] sync: always (fdatasync in every commit, its default) or interval "
                        "(synced once a second, like JetStream's default sync_interval of 2 minutes)")
    p.add_argument("--linger-us", type=int, default=None,
                   help="Bluewire's [delivery] linger_us on every node (default: the node's default, 2000)")
    p.add_argument("--floor", action="store_true",
                   help="measure `bluewire bench floor` instead of `bench fanout`: the same processes, mutual TLS and "
                        "calls with no store, no signatures and no routing (what a node could not go below)")
    p.add_argument("--floor-sign", action="store_true",
                   help="as --floor, with each message signed at the origin and checked at each receiver by the "
                        "nodes' own hybrid signature code (`bench floor --sign`), one signature per message: what "
                        "the transport and the signatures cost when each message is signed alone")
    p.add_argument("--paced-stream", action="store_true",
                   help="Bluewire's paced phases publish on one PublishStream call, each message at its time, "
                        "as the NATS publisher sends its publishes on its one connection (default: one unary "
                        "Publish call per message, an HTTP/2 request each)")
    p.add_argument("--client-threads", type=int, default=None,
                   help="threads of Bluewire's bench process, which runs its publisher and subscribers "
                        "(default: the bench's own, 1: all its clients on one thread; 0: one per core)")
    a = p.parse_args()
    a.floor = a.floor or a.floor_sign
    w = nats_fanout.workload_from(a)
    if a.pairs < 1:
        raise SystemExit("--pairs must be at least 1")
    if not a.bluewire.exists():
        raise SystemExit(f"{a.bluewire} is missing: cargo build --release -p bluewire-cli")

    nats_fanout.stop_cleanly_on_signals()
    try:
        measure(a, w)
    except KeyboardInterrupt:
        raise SystemExit("interrupted; every process this benchmark started has been stopped")


def bench_label(a: argparse.Namespace) -> str:
    """What the Bluewire side ran, for the summary line."""
    if a.floor_sign:
        return "bench floor --sign (the transport and the signatures)"
    if a.floor:
        return "bench floor (the transport alone)"
    return f"store sync: {a.store_sync}; paced publishes: {'one stream' if a.paced_stream else 'unary calls'}"


def measure(a: argparse.Namespace, w: Workload) -> None:
    info = machine(a.bluewire)
    pairs = []
    for i in range(1, a.pairs + 1):
        order = ("bluewire", "nats") if i % 2 else ("nats", "bluewire")
        figures = {}
        for side in order:
            print(f"pair {i}/{a.pairs}: {side}…", file=sys.stderr)
            if side == "bluewire":
                figures[side] = bluewire_fanout(a.bluewire, w, a.store_sync, a.linger_us, a.floor, a.floor_sign,
                                                a.paced_stream, a.client_threads)
            else:
                figures[side] = asyncio.run(nats_fanout.run(w, a.nats_client_tls))
        pair = {"pair": i, "order": order, **figures, "ratios": ratios(figures["bluewire"], figures["nats"])}
        pairs.append(pair)
        if a.output == "table":
            print_pair(pair)
            sys.stdout.flush()

    summary = summarise(pairs, w)
    if a.output == "json":
        print(json.dumps({"machine": info, "workload": {**vars(w), "rates": list(w.rates),
                                                        "nats_client_tls": a.nats_client_tls,
                                                        "bluewire_store_sync": a.store_sync,
                                                        "bluewire_linger_us": a.linger_us,
                                                        "bluewire_client_threads": a.client_threads,
                                                        "bluewire_paced_publish": None if a.floor
                                                        else "stream" if a.paced_stream else "unary",
                                                        "bluewire_bench": ("floor --sign" if a.floor_sign else "floor")
                                                        if a.floor else "fanout"},
                          "pairs": pairs, "summary": summary}))
    else:
        print_summary(summary)
        print(f"\n{info['date_utc']}: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}, load "
              f"{', '.join(f'{x:.2f}' for x in info['load_average_at_start'])} at start; {info['nats_server_version']}, "
              f"nats-py {info['nats_py_version']}; Bluewire: {info['bluewire_binary']} (built "
              f"{info['bluewire_binary_modified_utc']}; repository at {info['bluewire_commit']}), "
              f"{bench_label(a)}"
              f"; 1 → {w.receivers} receiver(s){'' if a.linger_us is None else f', linger {a.linger_us} µs'}"
              f"{'' if a.client_threads is None else f', client threads {a.client_threads}'}; "
              f"JetStream disk sync: {pairs[0]['nats']['topology']['jetstream_sync']}")


if __name__ == "__main__":
    main()
