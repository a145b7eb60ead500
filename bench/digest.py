"""How fast does the weekly digest go out, and does memory stay flat? (a benchmark, not a test)

Starts a loopback SMTP sink (aiosmtpd, in its own process, counting and
discarding), then in the same run:

1. the real digest path: N confirmed subscribers in a fresh SQLite archive,
   ``mailer.digest.run_digest`` exactly as ``mailer digest send`` runs it
   (send log, compact archive rows, checkpoint before every final dot);
2. a bare loop: aiosmtplib ``sendmail`` of pre-rendered copies of the same
   digest to the same sink, with the same number of connections (half of N
   before the real path and half after, so that load from elsewhere on the
   machine weighs on both sides alike).

Each side runs in a fresh process, so its peak RSS is its own. Reports
messages per second, the ratio real/bare, and peak RSS. ``--dkim`` makes
the real path DKIM-sign every copy with a fresh 2048-bit key (bench/signing.py
compares the two).

    .venv/bin/python bench/digest.py [--quick] [--n N] [--concurrency C] [--dkim]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the sink ---------------------------------------------------------------------------------

def run_sink(port_file: Path) -> None:
    """An SMTP sink that counts messages; prints the count when terminated."""
    from aiosmtpd.controller import Controller

    class Counter:
        count = 0

        async def handle_DATA(self, server, session, envelope):
            Counter.count += 1
            return "250 2.0.0 Ok"

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Counter(), hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    port_file.write_text(str(port))
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    while not stop["now"]:
        time.sleep(0.05)
    controller.stop()
    print(json.dumps({"received": Counter.count}))


# -- the two sides ------------------------------------------------------------------------------

def make_config(folder: Path, port: int, concurrency: int, dkim: bool = False):
    from mailer.config import config_from_dict, resolve_paths

    data = {
        "storage": {"database": "bench.db"},
        "delivery": {"mode": "smtp", "relay_port": port, "timeout": 30.0},
        "digest": {"concurrency": concurrency, "schedules": "schedules"},
        "web": {"public_url": "https://column.example"},
    }
    if dkim:
        from mailer.outbound.dkim import generate_key, write_private_key

        write_private_key(folder / "dkim.key", generate_key(2048), force=True)
        data["dkim"] = {"selector": "bench", "domain": "column.example", "key_file": "dkim.key"}
    return resolve_paths(config_from_dict(data), folder, source=None)


def prepare(config, n: int) -> None:
    """N confirmed subscribers and five topics published this week."""
    from mailer import topics
    from mailer.store.db import open_database

    db = open_database(config.storage.database)
    today = dt.date.today()
    made = [topics.Topic(
        slug=f"piece-{i}", title=f"Small changes that stay, part {i}",
        url=f"https://column.example/topics/piece-{i}",
        summary="How to notice what has changed, protect it on bad weeks, and treat a slip as information "
                "instead of proof that nothing worked. " * 2,
        keywords=("change", "progress"), published=(today - dt.timedelta(days=i)).isoformat(),
    ) for i in range(5)]
    topics.import_topics(db, made, clock=lambda: dt.datetime.now(dt.timezone.utc))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with db.atomic():
        db.conn.executemany(
            "INSERT INTO subscribers (email, status, source, created_at, updated_at, confirmed_at) "
            "VALUES (?, 'confirmed', 'bench', ?, ?, ?)",
            ((f"reader{i:07d}@example.org", now, now, now) for i in range(n)),
        )
    db.close()


def run_real(folder: Path, port: int, n: int, concurrency: int, dkim: bool = False) -> dict:
    from mailer.newsletter.sending import run_digest
    from mailer.newsletter.subscribers import token_key

    config = make_config(folder, port, concurrency, dkim)
    prepare(config, n)
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    summary = asyncio.run(run_digest(
        config, clock=lambda: dt.datetime.now(dt.timezone.utc), key=token_key(config)))
    elapsed = time.perf_counter() - start
    size = os.path.getsize(config.storage.database) + sum(
        os.path.getsize(p) for p in folder.glob("bench.db-*"))
    return {"sent": summary.sent, "failed": summary.failed, "seconds": elapsed, "rate": summary.sent / elapsed,
            "peak_rss_mb": peak_rss_mb(), "rss_before_send_mb": rss_before, "db_mb": size / 2**20}


def run_bare(folder: Path, port: int, n: int, concurrency: int) -> dict:
    """aiosmtplib.sendmail of pre-rendered copies of the same digest, nothing else."""
    import aiosmtplib

    from mailer.newsletter.digest import Frame, Markers, compose_frame
    from mailer.newsletter.subscribers import unsubscribe_token
    from mailer.outbound.templating import template_environment

    config = make_config(folder, port, concurrency)
    topics = [{"title": f"Small changes that stay, part {i}", "url": f"https://column.example/topics/piece-{i}",
               "summary": "How to notice what has changed, protect it on bad weeks. " * 4} for i in range(5)]
    markers = Markers.new()
    frame = Frame(compose_frame(config, template_environment(), topics, digest_id=1,
                                created=dt.datetime.now(dt.timezone.utc), markers=markers), markers)
    pool = [frame.copy(f"reader{i:07d}@example.org", i, unsubscribe_token(b"k" * 32, i)) for i in range(1000)]

    async def worker(share: range) -> int:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await client.connect()
        sent = 0
        for i in share:
            await client.sendmail("bounces@column.example", [f"reader{i:07d}@example.org"], pool[i % len(pool)])
            sent += 1
        await client.quit()
        return sent

    async def main() -> int:
        shares = [range(k, n, concurrency) for k in range(concurrency)]
        return sum(await asyncio.gather(*(worker(s) for s in shares)))

    start = time.perf_counter()
    sent = asyncio.run(main())
    elapsed = time.perf_counter() - start
    return {"sent": sent, "seconds": elapsed, "rate": sent / elapsed, "peak_rss_mb": peak_rss_mb(),
            "message_bytes": len(pool[0])}


# -- the run ------------------------------------------------------------------------------------

def phase(name: str, port: int, n: int, concurrency: int, dkim: bool = False) -> dict:
    """Run one side in a fresh process (so its peak RSS is its own)."""
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--port", str(port), "--n", str(n),
         "--concurrency", str(concurrency), *(["--dkim"] if dkim else [])],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="subscribers (default 100,000)")
    parser.add_argument("--quick", action="store_true", help="5,000 subscribers")
    parser.add_argument("--concurrency", type=int, default=8, help="relay connections on both sides")
    parser.add_argument("--dkim", action="store_true", help="DKIM-sign the real path's copies (2048-bit key)")
    parser.add_argument("--phase", choices=["real", "bare", "sink"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = 5_000 if args.quick else args.n

    if args.phase == "sink":
        run_sink(Path(args.port_file))
        return
    if args.phase in ("real", "bare"):
        import logging

        logging.basicConfig(level=logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="bench-digest-") as folder:
            fn = run_real if args.phase == "real" else run_bare
            extra = {"dkim": args.dkim} if args.phase == "real" else {}
            print(json.dumps(fn(Path(folder), args.port, n, args.concurrency, **extra)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-sink-") as folder:
        port_file = Path(folder) / "port"
        sink = subprocess.Popen([sys.executable, __file__, "--phase", "sink", "--port-file", str(port_file)],
                                stdout=subprocess.PIPE, text=True)
        try:
            while not port_file.exists() or not port_file.read_text():
                if sink.poll() is not None:
                    raise SystemExit("the SMTP sink did not start")
                time.sleep(0.05)  # waiting for the sink process to bind
            port = int(port_file.read_text())
            print(f"digest to {n:,} subscribers, {args.concurrency} connections, loopback sink on port {port}")
            # The bare loop runs half before and half after the real path, so that
            # load from elsewhere on the machine weighs on both sides alike.
            first = phase("bare", port, n // 2, args.concurrency)
            real = phase("real", port, n, args.concurrency, args.dkim)
            second = phase("bare", port, n - n // 2, args.concurrency)
            bare = {"sent": first["sent"] + second["sent"], "seconds": first["seconds"] + second["seconds"],
                    "peak_rss_mb": max(first["peak_rss_mb"], second["peak_rss_mb"]),
                    "message_bytes": first["message_bytes"]}
            bare["rate"] = bare["sent"] / bare["seconds"]
        finally:
            sink.send_signal(signal.SIGTERM)
            received = json.loads(sink.communicate(timeout=30)[0].strip().splitlines()[-1])["received"]
    print(f"  {'real path + DKIM' if args.dkim else 'real digest path'} : {real['sent']:>8,} sent in {real['seconds']:7.1f} s = {real['rate']:7.0f} msg/s,"
          f" peak RSS {real['peak_rss_mb']:.0f} MiB (before sending {real['rss_before_send_mb']:.0f} MiB),"
          f" archive {real['db_mb']:.0f} MiB")
    print(f"  bare aiosmtplib  : {bare['sent']:>8,} sent in {bare['seconds']:7.1f} s = {bare['rate']:7.0f} msg/s,"
          f" peak RSS {bare['peak_rss_mb']:.0f} MiB ({bare['message_bytes']:,} bytes a message)")
    print(f"  ratio real/bare  : {real['rate'] / bare['rate']:.2f}   (sink received {received:,};"
          f" expected {real['sent'] + bare['sent']:,})")


if __name__ == "__main__":
    main()
