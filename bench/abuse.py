"""What abusive senders cost `mailer serve` in memory and in other readers' time (a benchmark, not a test).

Starts ``mailer serve`` as a child process on loopback and attacks it in
rounds, sampling the server's resident memory (RSS) every 50 ms:

* ``abandon``: S sessions (default 200, spread over A loopback addresses,
  127.0.0.2 and up) each start DATA, send B bytes of a letter (default
  1.5 MiB against a 2 MiB ``smtp.max_message_bytes``), wait, and hang up
  with a reset, mid-letter. Per round: sessions served, peak RSS, and RSS
  once the round's sessions are gone (what the process keeps).
* ``one-address``: the same from a single address: how many slots one
  client gets.
* ``encoded-subject``: one letter per round whose Subject is K KiB of RFC
  2047 encoded words, folded (the standard parser spends memory growing
  with the square of it); the answer and peak RSS.
* ``header-count``: one letter with N header fields, and an ordinary letter
  sent just after it: the answers, and how long the ordinary one waited.

Everything is bounded (rounds, sessions, seconds) and stays on loopback.

    .venv/bin/python bench/abuse.py [--attack abandon|one-address|encoded-subject|header-count]
                                    [--rounds R] [--sessions S] [--addresses A] [--bytes B] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

MiB = 1024 * 1024
RCPT = b"letters@column.example"


class RssSampler:
    """Samples a process's RSS on a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return self.process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self._peak = max(self._peak, self.now())
            except Exception:  # noqa: BLE001 - the server went away; the bench reports that
                return

    def reset(self) -> None:
        self._peak = self.now()

    def peak(self) -> int:
        return max(self._peak, self.now())

    def close(self) -> None:
        self._stop.set()


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One whole SMTP reply (all its lines)."""
    lines = b""
    while True:
        line = await reader.readline()
        if not line:
            return lines
        lines += line
        if line[3:4] != b"-":
            return lines


async def _open(port: int, source: str, timeout: float = 10.0):
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout)


async def _abandoning_session(port: int, source: str, size: int, hold: float) -> bool:
    """Start a letter, send ``size`` bytes of it, wait ``hold`` s, and reset. True if it got to DATA."""
    try:
        reader, writer = await _open(port, source)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        banner = await _reply(reader)
        if not banner.startswith(b"220"):
            return False
        for line in (b"EHLO abuse.example", b"MAIL FROM:<abuse@example.net>", b"RCPT TO:<" + RCPT + b">", b"DATA"):
            writer.write(line + b"\r\n")
            answer = await _reply(reader)
            if not answer[:1] in (b"2", b"3"):
                return False
        writer.write(b"From: abuse@example.net\r\nSubject: filler\r\n\r\n")
        line = b"f" * 998 + b"\r\n"
        for _ in range(size // len(line)):
            writer.write(line)
            await writer.drain()
        await asyncio.sleep(hold)
        return True
    except (OSError, asyncio.IncompleteReadError):
        return False
    finally:
        sock = writer.get_extra_info("socket")
        if sock is not None:  # a reset, as a client that gives up does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.close()


async def _send_letter(port: int, raw: bytes, timeout: float = 600.0) -> tuple[bytes, float]:
    """Send one letter; its final answer and the seconds from connecting to that answer."""
    started = time.monotonic()
    reader, writer = await _open(port, "127.0.0.1")
    try:
        await _reply(reader)
        for line in (b"EHLO bench.example", b"MAIL FROM:<reader@example.org>", b"RCPT TO:<" + RCPT + b">", b"DATA"):
            writer.write(line + b"\r\n")
            await _reply(reader)
        writer.write(raw + b".\r\n")
        answer = await asyncio.wait_for(_reply(reader), timeout)
        writer.write(b"QUIT\r\n")
        return answer.strip(), time.monotonic() - started
    finally:
        writer.close()


def _settled_rss(sampler: RssSampler, seconds: float = 3.0) -> int:
    """RSS once the round's sessions are gone: the lowest of a few samples over ``seconds``."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(sampler.now())
        time.sleep(0.25)
    return min(samples)


def attack_abandon(args, port: int, sampler: RssSampler, addresses: int) -> list[dict]:
    results = []
    for number in range(1, args.rounds + 1):
        sampler.reset()
        sources = [f"127.0.0.{2 + n % addresses}" for n in range(args.sessions)]

        async def round_() -> list[bool]:
            return await asyncio.gather(*(_abandoning_session(port, s, args.bytes, args.hold) for s in sources))

        started = time.monotonic()
        served = sum(asyncio.run(round_()))
        peak = sampler.peak()
        after = _settled_rss(sampler)
        results.append({"round": number, "sessions": args.sessions, "reached_data": served,
                        "peak_rss_mib": round(peak / MiB), "rss_after_mib": round(after / MiB),
                        "seconds": round(time.monotonic() - started, 1)})
    return results


def _encoded_subject(kib: int) -> bytes:
    words = b"\r\n".join([b" =?utf-8?q?a?="] * (kib * 1024 // 15))
    return b"From: reader@example.org\r\nSubject:" + words + b"\r\n\r\nbody\r\n"


def attack_encoded_subject(args, port: int, sampler: RssSampler) -> list[dict]:
    results = []
    for kib in args.subject_kib:
        sampler.reset()
        answer, seconds = asyncio.run(_send_letter(port, _encoded_subject(kib)))
        results.append({"subject_kib": kib, "answer": answer.decode(errors="replace")[:90],
                        "seconds": round(seconds, 2), "peak_rss_mib": round(sampler.peak() / MiB),
                        "rss_after_mib": round(_settled_rss(sampler, 1.0) / MiB)})
    return results


def attack_header_count(args, port: int, sampler: RssSampler) -> list[dict]:
    fields = b"".join(b"X-F%d: v\r\n" % n for n in range(args.fields))
    bomb = b"From: reader@example.org\r\nSubject: many fields\r\n" + fields + b"\r\nbody\r\n"
    ordinary = b"From: reader@example.org\r\nSubject: ordinary\r\n\r\nDear column,\r\nhello.\r\n"

    async def both():
        first = asyncio.create_task(_send_letter(port, bomb))
        await asyncio.sleep(0.5)  # the bomb is being read (or refused) when the ordinary letter comes
        second = await _send_letter(port, ordinary)
        return await first, second

    sampler.reset()
    (bomb_answer, bomb_s), (answer, waited) = asyncio.run(both())
    return [{"fields": args.fields, "bomb_answer": bomb_answer.decode(errors="replace")[:90],
             "bomb_seconds": round(bomb_s, 2), "ordinary_answer": answer.decode(errors="replace")[:40],
             "ordinary_waited_s": round(waited, 2), "peak_rss_mib": round(sampler.peak() / MiB)}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", default="abandon",
                        choices=["abandon", "one-address", "encoded-subject", "header-count"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--addresses", type=int, default=20, help="loopback addresses the sessions come from")
    parser.add_argument("--bytes", type=int, default=3 * MiB // 2, help="bytes of letter each session sends")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each session waits before its reset")
    parser.add_argument("--subject-kib", type=int, nargs="+", default=[64, 140])
    parser.add_argument("--fields", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.sessions > 1000 or args.rounds > 20 or args.bytes > 8 * MiB:
        parser.error("keep it bounded: at most 1,000 sessions, 20 rounds, 8 MiB a session")

    with tempfile.TemporaryDirectory(prefix="mailer-abuse-") as folder:
        work = Path(folder)
        port = _common.free_port()
        config = _common.write_config(work, smtp_port=port, smtp={
            "max_message_bytes": 2 * MiB, "max_connections": 200, "idle_timeout": 30.0,
        }, acknowledgements={"enabled": False})
        log = open(work / "serve.log", "w")
        proc = subprocess.Popen([_common.PYTHON, "-m", "mailer", "--config", str(config), "serve"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=work)
        try:
            _common.wait_for_port(port, proc)
            sampler = RssSampler(proc.pid)
            start_rss = sampler.now()
            if args.attack == "abandon":
                results = attack_abandon(args, port, sampler, args.addresses)
            elif args.attack == "one-address":
                results = attack_abandon(args, port, sampler, 1)
            elif args.attack == "encoded-subject":
                results = attack_encoded_subject(args, port, sampler)
            else:
                results = attack_header_count(args, port, sampler)
            sampler.close()
        finally:
            _common.stop(proc)
            log.close()
        tracebacks = (work / "serve.log").read_text(errors="replace").count("Traceback")
    summary = {"attack": args.attack, "rss_at_start_mib": round(start_rss / MiB), "results": results,
               "tracebacks_in_log": tracebacks, "machine": _common.machine()}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    columns = list(results[0]) if results else []
    _common.print_table(f"bench/abuse.py --attack {args.attack} (RSS at start {summary['rss_at_start_mib']} MiB)",
                        columns, [[str(row[c]) for c in columns] for row in results],
                        [f"tracebacks in the server's log: {tracebacks}"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
