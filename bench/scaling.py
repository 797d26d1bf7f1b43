#!/usr/bin/env python3
"""How the fan-out's cost grows (issue #12 item 6): `bluewire bench fanout` for 4, 8 and 16
receiving nodes with 1 KiB messages, and for 1 KiB, 16 KiB and 256 KiB messages with 4
receivers, every configuration once per round, rounds repeated (the order rotates each
round so no configuration always runs first). Reports throughput, p99 at a paced rate, the
nodes' CPU per delivered message, each as a ratio to the 4-receiver 1 KiB baseline of the
same round, and draws them as an SVG (stdlib only). A benchmark, not a test.

    bench/scaling [--rounds 3] [--rate 100] [--svg bench/scaling.svg] [--output json]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
BASELINE = (4, 1024)
# (receivers, payload bytes, messages in the throughput phase)
CONFIGS = [(4, 1024, 3000), (8, 1024, 3000), (16, 1024, 3000), (4, 16384, 1500), (4, 262144, 200)]


def run(binary: Path, receivers: int, size: int, messages: int, rate: int, seconds: int,
        client_threads: Optional[int] = None) -> dict:
    cmd = [str(binary), "--output", "json", "bench", "fanout", "--receivers", str(receivers),
           "--size", str(size), "--messages", str(messages), "--rate", str(rate),
           "--seconds", str(seconds)]
    if client_threads is not None:
        # Builds from before `--client-threads` refuse it: given only when asked for.
        cmd += ["--client-threads", str(client_threads)]
    print(f"scaling: {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    # Its own session: on a timeout the whole group gets SIGTERM, which the benchmark turns
    # into stopping its node processes and removing its directory.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
        raise
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    r = json.loads(out)
    return {"receivers": receivers, "size": size, "messages": messages,
            "msg_per_s": r["throughput"]["msg_per_s"],
            "cpu_us_per_msg": r["throughput"]["node_cpu_us_per_msg"],
            "p99_ms": r["paced"][0]["p99"], "p50_ms": r["paced"][0]["p50"],
            "achieved_rate": r["paced"][0]["achieved_rate"]}


def span(values: list) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarise(rounds: list) -> list:
    rows = []
    for receivers, size, _ in CONFIGS:
        mine = [next(r for r in rnd if (r["receivers"], r["size"]) == (receivers, size)) for rnd in rounds]
        base = [next(r for r in rnd if (r["receivers"], r["size"]) == BASELINE) for rnd in rounds]
        row = {"receivers": receivers, "size": size}
        for key in ("msg_per_s", "p99_ms", "cpu_us_per_msg"):
            row[key] = span([m[key] for m in mine])
            row[key + "_ratio"] = span([m[key] / b[key] for m, b in zip(mine, base)])
        rows.append(row)
    return rows


def svg(rows: list, path: Path, rate: int) -> None:
    """Three panels (throughput, p99, CPU per message), one bar group per configuration,
    median with a min–max whisker."""
    w, h, pad = 960, 360, 50
    panels = [("msg_per_s", "throughput (msg/s)"), ("p99_ms", f"p99 at {rate} msg/s (ms)"),
              ("cpu_us_per_msg", "node CPU per message (µs)")]
    pw = (w - pad) / len(panels)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="white"/>']
    for i, (key, title) in enumerate(panels):
        x0 = pad / 2 + i * pw
        top, bottom = 40, h - 70
        vmax = max(r[key]["max"] for r in rows) * 1.1 or 1
        parts.append(f'<text x="{x0 + pw / 2}" y="20" text-anchor="middle" font-size="13">{title}</text>')
        parts.append(f'<line x1="{x0 + 30}" y1="{bottom}" x2="{x0 + pw - 10}" y2="{bottom}" stroke="black"/>')
        parts.append(f'<line x1="{x0 + 30}" y1="{top}" x2="{x0 + 30}" y2="{bottom}" stroke="black"/>')
        for t in range(5):
            v = vmax * t / 4
            y = bottom - (bottom - top) * t / 4
            parts.append(f'<text x="{x0 + 26}" y="{y + 4}" text-anchor="end">{v:.0f}</text>')
        bw = (pw - 50) / len(rows)
        for j, r in enumerate(rows):
            cx = x0 + 35 + bw * j + bw / 2
            scale = lambda v: bottom - (bottom - top) * v / vmax  # noqa: E731
            colour = "#3b6ea8" if r["size"] == 1024 else "#c0703a"
            parts.append(f'<rect x="{cx - bw * 0.35}" y="{scale(r[key]["median"])}" width="{bw * 0.7}" '
                         f'height="{bottom - scale(r[key]["median"])}" fill="{colour}"/>')
            parts.append(f'<line x1="{cx}" y1="{scale(r[key]["min"])}" x2="{cx}" y2="{scale(r[key]["max"])}" stroke="black"/>')
            label = f'{r["receivers"]} nodes' if r["size"] == 1024 else f'{r["size"] // 1024} KiB'
            parts.append(f'<text x="{cx}" y="{bottom + 14}" text-anchor="middle">{label}</text>')
            parts.append(f'<text x="{cx}" y="{bottom + 27}" text-anchor="middle" fill="#555">'
                         f'{"1 KiB" if r["size"] == 1024 else "4 nodes"}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle" fill="#555">bluewire bench fanout: '
                 'median of the rounds, whisker min–max; blue: receivers at 1 KiB, orange: payload at 4 receivers</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=int, default=100, help="paced rate of the latency phase (msg/s)")
    p.add_argument("--seconds", type=int, default=5, help="length of the latency phase (s)")
    p.add_argument("--bluewire", type=Path, default=REPO / "target/release/bluewire")
    p.add_argument("--svg", type=Path, default=REPO / "bench/scaling.svg")
    p.add_argument("--output", choices=("table", "json"), default="table")
    p.add_argument("--client-threads", type=int, default=None,
                   help="threads of the bench's clients (default: the bench's, 1; 0: one per core, as the "
                        "figures in BENCHMARKS.md were measured)")
    a = p.parse_args()
    rounds = []
    for k in range(a.rounds):
        order = CONFIGS[k % len(CONFIGS):] + CONFIGS[:k % len(CONFIGS)]
        rounds.append([run(a.bluewire, n, s, m, a.rate, a.seconds, a.client_threads) for n, s, m in order])
    rows = summarise(rounds)
    svg(rows, a.svg, a.rate)
    if a.output == "json":
        print(json.dumps({"rounds": rounds, "summary": rows, "rate": a.rate, "client_threads": a.client_threads}))
        return
    print(f"{'config':>16} | {'msg/s':>20} | {'ratio':>11} | {'p99 ms @' + str(a.rate):>20} | {'ratio':>11} | {'CPU µs/msg':>20} | {'ratio':>11}")
    for r in rows:
        cfg = f'{r["receivers"]} nodes, {r["size"] // 1024} KiB'
        cells = []
        for key in ("msg_per_s", "p99_ms", "cpu_us_per_msg"):
            s, q = r[key], r[key + "_ratio"]
            cells.append(f'{s["median"]:>7.1f} ({s["min"]:.1f}–{s["max"]:.1f})')
            cells.append(f'{q["median"]:>5.2f} ({q["min"]:.2f}–{q["max"]:.2f})')
        print(f"{cfg:>16} | " + " | ".join(cells))
    print(f"plot: {a.svg}")


if __name__ == "__main__":
    main()
