"""One recipient organisation's subscriber on the NATS JetStream side of the comparison.

Started by nats_fanout.py as a separate process per recipient, so the four subscribers
compete for the cores as real subscribers would. It connects to its own leaf node and
subscribes to the deliver subject of its durable push consumer (created on the hub by the
publisher), acknowledges every message and records when each one arrived
(CLOCK_MONOTONIC, which is system-wide on Linux, so the publisher can subtract its own
timestamps).

Line protocol with the publisher:
  stdout  "ready"        subscribed, messages may flow
          "done K"       every message of phase K has arrived here
          "written N"    arrivals are in --out (N redeliveries were ignored); exiting
  stdin   "finish"       write the arrivals and exit (also on end of input)

--out receives one signed 64-bit integer per message index, native byte order: the
arrival time in nanoseconds, or 0 for a message that never arrived.
"""

import argparse
import array
import asyncio
import bisect
import ssl
import sys
import time

import nats

INDEX_BYTES = 8


def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """Verify the leaf's certificate against the benchmark CA and present our own."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--ca", help="CA certificate; with --cert and --key, connect with mutual TLS")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--deliver-subject", required=True, help="where the hub pushes this recipient's consumer")
    p.add_argument("--phase-ends", required=True, help="cumulative message counts at the end of each phase")
    p.add_argument("--out", required=True)
    a = p.parse_args()

    ends = [int(x) for x in a.phase_ends.split(",")]
    arrivals = array.array("q", bytes(8 * ends[-1]))
    missing = [end - start for start, end in zip([0] + ends[:-1], ends)]
    redeliveries = 0

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def on_message(msg) -> None:
        nonlocal redeliveries
        now = time.monotonic_ns()
        i = int.from_bytes(msg.data[:INDEX_BYTES], "big")
        if i < len(arrivals) and arrivals[i] == 0:
            arrivals[i] = now
            phase = bisect.bisect_right(ends, i)
            missing[phase] -= 1
            if missing[phase] == 0:
                say(f"done {phase}")
        else:
            redeliveries += 1
        await msg.ack()

    tls = tls_context(a.ca, a.cert, a.key) if a.ca else None
    nc = await nats.connect(a.url, tls=tls, max_reconnect_attempts=0, connect_timeout=10)
    await nc.subscribe(a.deliver_subject, cb=on_message)
    await nc.flush()
    say("ready")

    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while (line := await stdin.readline()) and line.strip() != b"finish":
        pass
    await nc.close()
    with open(a.out, "wb") as f:
        arrivals.tofile(f)
    say(f"written {redeliveries}")


if __name__ == "__main__":
    asyncio.run(main())
