#!/usr/bin/env python3
"""Soak `idem serve` with hostile and normal clients mixed; report memory and service.

Starts the given `idem` binary (`idem serve` on a fresh SQLite file, a low file-descriptor
limit, default flags otherwise) and, for `--minutes` (default 30), keeps up at once:

* slowloris clients that send a request head one byte per second,
* clients that declare a 1 MiB body, send 64 KiB of it and stall,
* silent connections that send nothing,
* h2c clients that send the HTTP/2 preface,
* normal clients on keep-alive connections: a payment with a fresh key, then its replay.

Every 10 s it samples the server's resident memory (VmRSS) and open descriptors, and the
normal clients' answers and latency. It prints a Markdown summary (for docs/benchmarks.md)
and exits 1 if a normal request failed more than 1% of the time or memory kept growing.

    cargo build --release -p idem-cli
    python3 scripts/soak.py --idem "$CARGO_TARGET_DIR/release/idem" --minutes 30

Standard library only. The figures are this machine's; read them against the server's
own limits (`idem serve --help`).
"""

import argparse
import asyncio
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PAYMENT = b'{"amount": 1.00, "currency": "USD", "destination": "soak"}'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idem", required=True, help="path to the idem binary")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--stalled-bodies", type=int, default=200)
    parser.add_argument("--silent", type=int, default=300)
    parser.add_argument("--h2c", type=int, default=20)
    parser.add_argument("--normal", type=int, default=8)
    parser.add_argument("--fd-limit", type=int, default=2048, help="the server's RLIMIT_NOFILE")
    return parser.parse_args()


class Stats:
    def __init__(self):
        self.ok = 0
        self.failed = 0
        self.latencies = []
        self.closed_by_server = {"slowloris": 0, "stalled": 0, "silent": 0, "h2c": 0}
        self.answers = {}

    def take_window(self):
        window = (self.ok, self.failed, self.latencies)
        self.ok, self.failed, self.latencies = 0, 0, []
        return window


def start_server(idem, fd_limit):
    directory = tempfile.mkdtemp(prefix="idem-soak-")
    database = os.path.join(directory, "soak.db")

    def limit_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    process = subprocess.Popen(
        [idem, "serve", "--listen", "127.0.0.1:0", "--store", f"sqlite://{database}", "--connections-max",
         str(fd_limit // 2)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, preexec_fn=limit_descriptors, text=True,
        env={**os.environ, "RUST_LOG": "warn,idem_server=info"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(r"listening on http://([0-9.]+):([0-9]+)", line)
        if match:
            return process, match.group(1), int(match.group(2))
    process.kill()
    sys.exit("idem serve did not report its address within 30 s")


def drain_stderr(process):
    # The server logs one line per request: read them so its pipe never fills.
    for _ in process.stderr:
        pass


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def wait_closed(reader, timeout):
    """Reads until the server closes the connection; True if it did within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(4096):
                pass
        return True
    except (TimeoutError, ConnectionError):
        return False


async def slowloris(host, port, stats, stop):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
            head = b"POST /payments HTTP/1.1\r\nhost: soak\r\nidempotency-key: slow\r\n"
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
                if reader.at_eof():
                    break
            if await wait_closed(reader, 30):
                stats.closed_by_server["slowloris"] += 1
            writer.close()
        except (ConnectionError, OSError):
            stats.closed_by_server["slowloris"] += 1
            await asyncio.sleep(0.5)


async def stalled_body(host, port, stats, stop):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST /payments HTTP/1.1\r\nhost: soak\r\nidempotency-key: stall\r\n"
                         b"content-type: application/json\r\ncontent-length: 1048576\r\n\r\n" + b" " * 65536)
            await writer.drain()
            if await wait_closed(reader, 60):
                stats.closed_by_server["stalled"] += 1
            writer.close()
        except (ConnectionError, OSError):
            await asyncio.sleep(0.5)


async def silent(host, port, stats, stop, kind="silent", preface=b""):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
            if preface:
                writer.write(preface)
                await writer.drain()
            if await wait_closed(reader, 60):
                stats.closed_by_server[kind] += 1
            writer.close()
        except (ConnectionError, OSError):
            await asyncio.sleep(0.5)


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def normal(host, port, index, stats, stop):
    sequence = 0
    reader = writer = None
    while not stop.is_set():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            key = f"n{index}-{sequence}".encode()
            sequence += 1
            for _attempt in ("first", "replay"):
                started = time.monotonic()
                writer.write(b"POST /payments HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\n"
                             b"authorization: Bearer normal" + str(index).encode() + b"\r\nidempotency-key: " + key +
                             b"\r\ncontent-length: " + str(len(PAYMENT)).encode() + b"\r\n\r\n" + PAYMENT)
                await writer.drain()
                async with asyncio.timeout(10):
                    status = await read_response(reader)
                stats.answers[status] = stats.answers.get(status, 0) + 1
                if status in (200, 201):
                    stats.ok += 1
                    stats.latencies.append(time.monotonic() - started)
                else:
                    stats.failed += 1
            # About 8 keys per second per client: under the default per-caller rate limit.
            await asyncio.sleep(0.12)
        except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError) as error:
            stats.failed += 1
            stats.answers[type(error).__name__] = stats.answers.get(type(error).__name__, 0) + 1
            writer = None
            await asyncio.sleep(0.1)


async def main():
    args = parse_args()
    process, host, port = start_server(args.idem, args.fd_limit)
    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, drain_stderr, process)
    stats = Stats()
    stop = asyncio.Event()
    tasks = []
    tasks += [asyncio.create_task(slowloris(host, port, stats, stop)) for _ in range(args.slowloris)]
    tasks += [asyncio.create_task(stalled_body(host, port, stats, stop)) for _ in range(args.stalled_bodies)]
    tasks += [asyncio.create_task(silent(host, port, stats, stop)) for _ in range(args.silent)]
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    tasks += [asyncio.create_task(silent(host, port, stats, stop, "h2c", preface)) for _ in range(args.h2c)]
    tasks += [asyncio.create_task(normal(host, port, i, stats, stop)) for i in range(args.normal)]

    rows = []
    started = time.monotonic()
    total_ok = total_failed = 0
    while time.monotonic() - started < args.minutes * 60:
        await asyncio.sleep(10)
        ok, failed, latencies = stats.take_window()
        total_ok += ok
        total_failed += failed
        latencies.sort()
        p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
        row = (time.monotonic() - started, rss_kib(process.pid) / 1024, open_fds(process.pid), ok / 10, failed, p50, p99)
        rows.append(row)
        print(f"t={row[0]:6.0f}s rss={row[1]:6.1f} MiB fds={row[2]:5d} normal={row[3]:7.1f}/s failed={failed} "
              f"p50={p50:6.1f} ms p99={p99:6.1f} ms answers={stats.answers}", file=sys.stderr, flush=True)
    stop.set()
    for task in tasks:
        task.cancel()
    process.terminate()
    process.wait(timeout=30)

    print(f"| soak | {args.minutes:g} min, {args.slowloris} slowloris, {args.stalled_bodies} stalled 1 MiB bodies, "
          f"{args.silent} silent, {args.h2c} h2c, {args.normal} normal clients, fd limit {args.fd_limit} |")
    print("|---|---|")
    rss = [row[1] for row in rows]
    first_third = rss[: max(1, len(rss) // 3)]
    last_third = rss[-max(1, len(rss) // 3):]
    print(f"| server RSS (MiB): first sample / max / last | {rss[0]:.1f} / {max(rss):.1f} / {rss[-1]:.1f} |")
    print(f"| RSS, mean of first third / last third | {statistics.mean(first_third):.1f} / {statistics.mean(last_third):.1f} |")
    print(f"| open descriptors, max | {max(row[2] for row in rows)} |")
    rates = [row[3] for row in rows]
    print(f"| normal requests/s: min / median / max (10 s windows) | {min(rates):.1f} / {statistics.median(rates):.1f} / {max(rates):.1f} |")
    print(f"| normal requests answered 200/201 | {total_ok} of {total_ok + total_failed} "
          f"({100 * total_ok / max(1, total_ok + total_failed):.2f}%) |")
    p99s = [row[6] for row in rows if row[6] == row[6]]
    print(f"| normal p99 latency (ms): median / worst window | {statistics.median(p99s):.1f} / {max(p99s):.1f} |")
    print(f"| hostile connections closed by the server | {stats.closed_by_server} |")
    print(f"| normal answers by status | {dict(sorted(stats.answers.items(), key=str))} |")

    failure_rate = total_failed / max(1, total_ok + total_failed)
    grew = statistics.mean(last_third) > 1.5 * statistics.mean(first_third) + 16
    if failure_rate > 0.01 or grew:
        print(f"FAILED: failure rate {failure_rate:.2%}, memory grew: {grew}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
