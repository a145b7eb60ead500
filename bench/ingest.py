"""How fast does mailer take letters, next to aiosmtpd doing nothing? (a benchmark, not a test)

One run, two servers, the same client:

* ``mailer serve`` in its own process with the whole pipeline on: every
  letter archived and committed (WAL, synchronous=FULL, group commit) before
  its 250, then matched against the topics of examples/topics.toml and
  acknowledged into a Maildir. Every letter comes from a different reader, so
  every one is acknowledged: the heaviest ordinary load.
* a bare aiosmtpd server in its own process, with the listener's options, whose
  handler only answers 250: the limit of the SMTP library itself.

The client is a third process: C concurrent clients (default 16) send N letters
(default 5,000), one connection per letter as readers' mail servers do. It
speaks SMTP over asyncio streams by default (``--client raw``; ``aiosmtplib``
and ``smtplib`` threads are there to compare, and cost the client more CPU per
letter). On a machine with two or more cores client and servers are pinned to
different cores, so the client does not steal the server's.

Latency is from opening the connection to the answer to the final ``.`` of
DATA, the moment the letter is safe; letters/s is N over the wall time of the
whole run. After the last 250 the bench also waits for the pipeline to write
the last acknowledgement and reports when that happened (the row "to the last
acknowledgement": N over the time to it). Then, in the same run, a fresh
mailer server is offered letters open loop at ``--open-rate`` (default 200 a
second): p50 and p99 to the 250, and how many acknowledgements reached the
Maildir within 2 s of their letter's 250 (the pipeline keeping up).

``mailer serve`` files and acknowledges letters in a pipeline worker process
of its own (``[pipeline] worker = "process"``, its default); ``--pipeline
thread`` runs the pipeline inside the server's process instead, and
``--pipeline both`` runs both servers in one run, side by side (the summary
line is the worker process's). The server's CPU includes its worker's; the
worker starts on the server's cores (the server is pinned before it starts,
and its threads and children inherit that).

    .venv/bin/python bench/ingest.py [--quick] [--letters N] [--clients C] [--rate R]
                                     [--client raw|aiosmtplib|smtplib] [--open-rate R] [--no-pin]
                                     [--pipeline process|thread|both]
                                     [--profile py-spy|py-spy-gil|cprofile] [--keep] [--json]
    .venv/bin/python bench/ingest.py --parts [--letters N]

``--rate R`` offers R letters a second (open loop) instead of as many as the
clients can send: latency then shows what a sender sees at that load.
``--profile py-spy`` needs ``pip install py-spy`` in the venv; the profile
(collapsed stacks) is left in the kept folder. It covers the burst, every
thread; ``py-spy-gil`` samples only the thread holding the interpreter lock
(Python's own CPU: SQLite, which works without the lock, is not in it) and
goes on until the last acknowledgement.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import PYTHON, REPO, percentile  # noqa: E402

#: What the bench aims for (issue 6): mailer at 70% of the bare server, p99 under 50 ms.
AIM_RATIO = 0.7
AIM_P99_MS = 50.0

RCPT = "letters@column.example"
#: Letters sent before the clock starts (imports, first connections); acknowledged too.
WARM_UP = 20
SUBJECTS = [
    "What is a therapist's job?", "Is it normal to feel this tired?", "My sister and I stopped talking",
    "How do I start?", "Question about your last column", "I keep putting things off",
    "Panic before work every morning", "Should I go to therapy?", "Grief after my father died",
    "Re: your reply", "Moving to a new city alone", "Jealous of my best friend",
]


# --------------------------------------------------------------------------
# Letters


def make_letters(n: int, seed: int = 11, who: str = "reader") -> list[tuple[str, bytes]]:
    """``n`` (envelope sender, CRLF message) pairs of realistic length, one reader each.

    Bodies are drawn from the words of the example letter and catalog, with a
    log-normal length (median about 1.2 kB, a long tail to ~20 kB), so topic
    matching has real work to do.
    """
    rng = random.Random(seed)
    source = (REPO / "examples" / "letter.eml").read_text(encoding="utf-8").split("\n\n", 1)[1]
    source += (REPO / "examples" / "topics.toml").read_text(encoding="utf-8")
    words = re.findall(r"[A-Za-z']{2,}", source)
    run = f"{who}.{int(time.time())}.{os.getpid()}"
    letters = []
    for i in range(n):
        target = min(20_000, int(rng.lognormvariate(7.1, 0.7)))
        lines, line, size = [], [], 0
        while size < target:
            word = rng.choice(words)
            line.append(word)
            size += len(word) + 1
            if sum(len(w) + 1 for w in line) > 66:
                lines.append(" ".join(line))
                line = []
        lines.append(" ".join(line))
        sender = f"{who}{i}@example.org"
        head = (
            f"From: {who.title()} {i} <{sender}>\r\nTo: {RCPT}\r\nSubject: {rng.choice(SUBJECTS)}\r\n"
            f"Date: Tue, 10 Nov 2026 21:14:07 -0500\r\nMessage-ID: <{run}.{i}@example.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        )
        body = "Dear column,\r\n\r\n" + "\r\n".join(lines) + "\r\n\r\nThank you,\r\nReader\r\n"
        letters.append((sender, (head + "\r\n" + body).encode("utf-8")))
    return letters


def _dot_stuffed(raw: bytes) -> bytes:
    data = raw.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


# --------------------------------------------------------------------------
# The client (runs in its own process)


class SmtpError(Exception):
    pass


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)


async def _expect(reader: asyncio.StreamReader, code: int) -> None:
    got, text = await _reply(reader)
    if got != code:
        raise SmtpError(text.decode("ascii", "replace").strip())


async def send_raw(port: int, sender: str, payload: bytes) -> float:
    """One letter over a fresh connection with asyncio streams; seconds to the DATA answer."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _expect(reader, 220)
        writer.write(b"EHLO bench.example\r\n")
        await _expect(reader, 250)
        writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
        await _expect(reader, 250)
        writer.write(f"RCPT TO:<{RCPT}>\r\n".encode())
        await _expect(reader, 250)
        writer.write(b"DATA\r\n")
        await _expect(reader, 354)
        writer.write(payload)
        await _expect(reader, 250)
        elapsed = time.perf_counter() - start
        writer.write(b"QUIT\r\n")
        await _expect(reader, 221)
        return elapsed
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def send_aiosmtplib(port: int, sender: str, raw: bytes) -> float:
    """One letter with aiosmtplib over a fresh connection; seconds to the DATA answer."""
    import aiosmtplib

    start = time.perf_counter()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
    await client.connect()
    try:
        errors, _ = await client.sendmail(sender, [RCPT], raw)
        if errors:
            raise SmtpError(str(errors))
        elapsed = time.perf_counter() - start
        await client.quit()
        return elapsed
    finally:
        client.close()


def send_smtplib(port: int, sender: str, raw: bytes) -> float:
    """One letter with smtplib over a fresh connection; seconds to the DATA answer."""
    import smtplib

    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sendmail(sender, [RCPT], raw)
        elapsed = time.perf_counter() - start
    return elapsed


async def _run_async(port: int, letters, clients: int, kind: str, rate: float = 0.0,
                     answered: dict | None = None) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []

    async def one(sender, raw, payload) -> float:
        if kind == "raw":
            elapsed = await send_raw(port, sender, payload)
        else:
            elapsed = await send_aiosmtplib(port, sender, raw)
        if answered is not None:
            answered[sender] = time.time()  # wall clock: compared with the Maildir's file times
        return elapsed

    if rate:
        # Open loop: a letter is due every 1/rate s whether or not the last one
        # was answered; its latency counts from when it was due, so time spent
        # waiting for a free client is not hidden (no coordinated omission).
        slots = asyncio.Semaphore(clients)
        start = time.perf_counter()

        async def timed(index: int, item) -> None:
            due = start + index / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with slots:
                try:
                    await one(*item)
                    latencies.append(time.perf_counter() - due)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])

        await asyncio.gather(*(timed(i, item) for i, item in enumerate(letters)))
        return latencies, errors

    queue = iter(letters)

    async def worker() -> None:
        for item in queue:
            try:
                latencies.append(await one(*item))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors


def _run_threads(port: int, letters, clients: int) -> tuple[list[float], list[str]]:
    import threading

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    queue = iter(letters)

    def worker() -> None:
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            sender, raw, _ = item
            try:
                latencies.append(send_smtplib(port, sender, raw))
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def client_main(args) -> int:
    """The client process: send every letter, print one JSON line of results."""
    letters = [(s, raw, _dot_stuffed(raw)) for s, raw in make_letters(args.letters)]
    # A few letters first so connection setup and imports are not in the figures.
    warm = [(s, raw, _dot_stuffed(raw)) for s, raw in make_letters(WARM_UP, seed=5, who="warm")]
    cpu0 = time.process_time()
    if args.client == "smtplib":
        _run_threads(args.port, warm, min(4, args.clients))
        start = time.perf_counter()
        latencies, errors = _run_threads(args.port, letters, args.clients)
    else:
        asyncio.run(_run_async(args.port, warm, min(4, args.clients), args.client))
        start = time.perf_counter()
        answered: dict[str, float] = {}
        latencies, errors = asyncio.run(_run_async(args.port, letters, args.clients, args.client, args.rate,
                                                   answered))
    wall = time.perf_counter() - start
    print(json.dumps({
        "answered_at": answered if args.client != "smtplib" else {},
        "latencies": latencies, "errors": errors[:20], "error_count": len(errors),
        "wall": wall, "client_cpu": time.process_time() - cpu0, "finished_at": time.time(),
    }))
    return 0


# --------------------------------------------------------------------------
# The bare server (runs in its own process)


class Answer250:
    """The bare handler: no storage, no policy, just 250."""

    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok"


def bare_server_main(args) -> int:
    """aiosmtpd with the listener's options and a handler that only says 250."""
    import signal

    from aiosmtpd.smtp import SMTP

    from mailer.config import SmtpConfig
    from mailer.inbound.listener import COMMAND_LIMITS

    smtp = SmtpConfig()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        handler = Answer250()
        server = await loop.create_server(
            lambda: SMTP(
                handler, data_size_limit=smtp.max_message_bytes, enable_SMTPUTF8=True,
                decode_data=False, hostname=smtp.domain, ident="bare", timeout=smtp.idle_timeout,
                command_call_limit=COMMAND_LIMITS,
            ),
            host="127.0.0.1", port=args.port,
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(serve())
    return 0


# --------------------------------------------------------------------------
# The orchestrator


def run_client(port: int, args, cpus: set[int] | None) -> dict:
    cmd = [PYTHON, str(Path(__file__).resolve()), "--role", "client", "--port", str(port),
           "--letters", str(args.letters), "--clients", str(args.clients), "--client", args.client,
           "--rate", str(args.rate)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cpus:
        _common.pin(proc, cpus)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the client failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1])


def import_topics(config_path: Path) -> int:
    from mailer import topics
    from mailer.config import load_config_file
    from mailer.store.db import open_database

    config = load_config_file(config_path)
    db = open_database(config.storage.database)
    catalog, problems = topics.load_catalog(REPO / "examples" / "topics.toml")
    if problems:
        raise RuntimeError("examples/topics.toml: " + "; ".join(problems))
    topics.import_topics(db, catalog, clock=lambda: dt.datetime.now(dt.timezone.utc), source="examples/topics.toml")
    db.close()
    return len(catalog)


def _server_cmd(args, config: Path, out: Path) -> list[str]:
    serve = ["-m", "mailer", "--config", str(config), "serve"]
    if args.profile == "cprofile":  # the event loop's thread only; py-spy sees the writer too
        return [PYTHON, "-m", "cProfile", "-o", str(out / "mailer.prof"), *serve]
    return [PYTHON, *serve]


def _start_profiler(args, pid: int, out: Path) -> subprocess.Popen | None:
    if args.profile not in ("py-spy", "py-spy-gil"):
        return None
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--subprocesses", "--threads", "--nonblocking", "--rate", "250",
         *(["--gil"] if args.profile == "py-spy-gil" else []),
         "--format", "raw", "-o", str(out / "mailer.pyspy.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _stop_profiler(profiler: subprocess.Popen | None) -> None:
    if profiler is not None and profiler.poll() is None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        profiler.wait(60)


def _pinned(cpus: set[int] | None):
    """A preexec_fn that puts the new process on ``cpus`` before it runs anything.

    Pinned from the start, every thread the server starts (the archive
    writer) and every process (the pipeline worker) inherits the same cores;
    pinning a running process moves only its main thread.
    """
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def bench_mailer(args, work: Path, cpus: tuple[set[int], set[int]] | None, pipeline: str = "process") -> dict:
    port = _common.free_port()
    config = _common.write_config(work, smtp_port=port, pipeline={"worker": pipeline})
    n_topics = import_topics(config)
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen(_server_cmd(args, config, work), stdout=log, stderr=subprocess.STDOUT, cwd=work,
                            preexec_fn=_pinned(cpus[0] if cpus else None))
    try:
        _common.wait_for_port(port, proc)
        server_pid = _server_pid(proc)
        if pipeline == "process":
            _wait_for_worker(work / "serve.log", proc)
        profiler = _start_profiler(args, server_pid, work)
        cpu0 = _cpu_seconds(server_pid)
        result = run_client(port, args, cpus[1] if cpus else None)
        result["server_cpu"] = _cpu_seconds(server_pid) - cpu0
        if args.profile != "py-spy-gil":
            _stop_profiler(profiler)
        # The pipeline runs behind the listener; wait for the last acknowledgement.
        maildir = work / "maildir" / "new"
        deadline = time.time() + 120 + args.letters / 20
        expected = args.letters + WARM_UP
        while time.time() < deadline:
            done = sum(1 for _ in maildir.iterdir()) if maildir.exists() else 0
            if done >= expected:
                break
            time.sleep(0.05)
        result["acknowledged"] = done - WARM_UP
        result["acks_done_after"] = time.time() - result["finished_at"]
        result["ack_lags"] = _ack_lags(maildir, result.pop("answered_at", {}))
        # Everything the server spent on the run, acknowledgements included,
        # whether they were written during the burst or after it.
        result["server_cpu_to_last_ack"] = _cpu_seconds(server_pid) - cpu0
        _stop_profiler(profiler)
    finally:
        _common.stop(proc, timeout=120)
        log.close()
    result["topics"] = n_topics
    return result


def _ack_lags(maildir: Path, answered: dict[str, float]) -> list[float]:
    """Seconds from each letter's 250 to its acknowledgement's file in the Maildir.

    The file is written after the acknowledgement is queued, so this is an
    upper bound on "queued within N s of its letter". Warm-up letters are
    left out (the client did not time them).
    """
    from email.parser import BytesHeaderParser
    from email.utils import parseaddr

    lags = []
    for path in maildir.iterdir() if maildir.exists() else []:
        with open(path, "rb") as handle:
            head = BytesHeaderParser().parse(handle)
        to = parseaddr(str(head.get("To", "")))[1]
        if to in answered:
            lags.append(path.stat().st_mtime - answered[to])
    return lags


def bench_bare(args, cpus: tuple[set[int], set[int]] | None) -> dict:
    port = _common.free_port()
    cmd = [PYTHON, str(Path(__file__).resolve()), "--role", "bare-server", "--port", str(port)]
    proc = subprocess.Popen(cmd, preexec_fn=_pinned(cpus[0] if cpus else None))
    try:
        _common.wait_for_port(port, proc)
        cpu0 = _cpu_seconds(proc.pid)
        result = run_client(port, args, cpus[1] if cpus else None)
        result["server_cpu"] = _cpu_seconds(proc.pid) - cpu0
    finally:
        _common.stop(proc)
    return result


def _server_pid(proc: subprocess.Popen) -> int:
    """The Python process serving (under py-spy it is the profiler's child)."""
    try:
        import psutil

        process = psutil.Process(proc.pid)
        if "python" in (process.name() or ""):
            return proc.pid  # the server itself (its child is the pipeline worker)
        pythons = [c for c in process.children(recursive=True) if "python" in (c.name() or "")]
        return pythons[0].pid if pythons else proc.pid
    except Exception:  # noqa: BLE001 - psutil missing: measure the direct child
        return proc.pid


def _wait_for_worker(log: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until the pipeline worker process says it is ready (so its start is not timed)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "pipeline worker ready" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"mailer serve exited:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("the pipeline worker did not start")


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its children: the pipeline worker's, live or ended, counts."""
    try:
        import psutil

        process = psutil.Process(pid)
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue  # it just ended: counted in children_* once reaped
            total += child_times.user + child_times.system
        return total
    except Exception:  # noqa: BLE001
        return float("nan")


# --------------------------------------------------------------------------
# The parts, measured alone (--parts)


def _best_ms(fn, items, rounds: int = 5) -> float:
    """Milliseconds of CPU per item, the best of ``rounds`` passes (after a warm-up)."""
    for item in items[:10]:
        fn(item)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for item in items:
            fn(item)
        best = min(best, (time.process_time() - start) / len(items) * 1000)
    return best


def parts_main(args) -> int:
    """CPU per letter of each part of the server's work, in this process, one part at a time."""
    from mailer.store import archive, parsing
    from mailer.rules import crisis
    from mailer.app.service import message_handlers
    from mailer.inbound import pipeline
    from mailer.inbound.handling import PipelineContext
    from mailer import topics
    from mailer.clock import system_clock
    from mailer.outbound.compose import Outgoing, build_message, greeting, make_address, render, reply_subject
    from mailer.config import load_config_file
    from mailer.store.db import open_database
    from mailer.outbound.templating import template_environment

    letters = make_letters(args.letters, seed=9)
    raws = [raw for _, raw in letters]
    parsed = [parsing.parse_message(raw) for raw in raws]
    crisis.assess("", "")  # builds the crisis prefilter, as the service does at start
    work = Path(tempfile.mkdtemp(prefix="mailer-bench-parts-"))
    try:
        config = load_config_file(_common.write_config(work, smtp_port=_common.free_port()))
        import_topics(work / "mailer.toml")
        db = open_database(config.storage.database)
        store = filing = parse_ms = 0.0
        if hasattr(archive, "next_message_id"):
            from mailer.store import arrivals

            start = time.process_time()
            for sender, raw in letters:
                with db.atomic():  # what the listener commits before its 250
                    arrivals.receive(db, raw, archive.Envelope(sender, (RCPT,), "127.0.0.1:1"),
                                     kind="letter", clock=system_clock)
            store = (time.process_time() - start) / len(letters) * 1000
            start = time.process_time()
            while True:  # what the pipeline does to file them: parse, then one transaction a round
                batch = [(i, parsing.parse_message(raw)) for i, raw in arrivals.unfiled(db, pipeline.FILE_PER_ROUND)]
                if not batch:
                    break
                with db.atomic():
                    for arrival_id, parsed_one in batch:
                        with db.atomic():
                            arrivals.file_arrival(db, arrival_id, parsed_one, clock=system_clock)
            filing = (time.process_time() - start) / len(letters) * 1000
        else:  # the tree before arrivals: everything before the 250
            start = time.process_time()
            for sender, raw in letters:
                with db.atomic():
                    archive.store_inbound(db, raw, archive.Envelope(sender, (RCPT,), "127.0.0.1:1"),
                                          kind="letter", clock=system_clock)
            store = (time.process_time() - start) / len(letters) * 1000
        matching = _best_ms(lambda p: topics.topics_for_letter(db, p.subject, p.body_text, limit=3), parsed, 2)
        templates = template_environment(config.templates_override())
        ctx = PipelineContext(config=config, templates=templates, clock=system_clock)
        handlers = message_handlers()
        start, done = time.process_time(), 0
        while True:
            with db.atomic():
                handled = pipeline.process_pending(db, handlers, ctx, pipeline.PER_TRANSACTION)
            if not handled:
                break
            done += handled
        acknowledging = (time.process_time() - start) / max(1, done) * 1000
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ack_context(p):  # what acknowledgements.handle_letter gives the templates
        return {
            "reader_name": p.from_name, "greeting": greeting(p.from_name), "name": p.from_name,
            "subject": p.subject, "subject_quoted": f"“{p.subject}”", "topics": [], "fell_back": True,
            "crisis": False, "urgent": False, "crisis_resources": config.crisis.resources.strip(),
            "helplines": config.crisis, "letters_address": config.addresses.letters, "column": config.column}

    def outgoing(p):
        body = render(templates, "acknowledgement", ack_context(p))
        return Outgoing(sender=make_address("letters@column.example", "The Column"),
                        recipient=make_address(p.from_addr, p.from_name), subject=reply_subject(p.subject),
                        body=body, domain="column.example", in_reply_to=p.message_id, references=p.references,
                        extra_headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"})

    outs = [outgoing(p) for p in parsed]
    messages = [build_message(o, clock=system_clock) for o in outs]
    acks = [m.as_bytes() for m in messages]
    parse_ms = _best_ms(parsing.parse_message, raws)
    rows = [
        ["listener: before the 250 (arrivals.receive; store_inbound before arrivals)", store],
        ["pipeline: filing (parse + thread + index), a letter" if filing else "  of which parse_message",
         filing or parse_ms],
        *([["  of which parse_message", parse_ms]] if filing else []),
        [f"pipeline: process_pending, a letter acknowledged ({pipeline.PER_TRANSACTION} a commit at most)",
         acknowledging],
        ["pipeline in all, a letter acknowledged (filing + acknowledging)", filing + acknowledging],
        ["  of which crisis.assess", _best_ms(lambda p: crisis.assess(p.subject, p.body_text), parsed)],
        ["  of which topics_for_letter", matching],
        ["  of which render (text + HTML, stylesheet inlined)",
         _best_ms(lambda p: render(templates, "acknowledgement", ack_context(p)), parsed)],
        ["  of which build_message + as_bytes",
         _best_ms(lambda o: build_message(o, clock=system_clock).as_bytes(), outs)],
        ["  of which reading our acknowledgement to archive it: parse_message", _best_ms(parsing.parse_message, acks)],
    ]
    if hasattr(parsing, "parse_own"):
        rows.append(["    ... what enqueue does now: parse_own",
                     _best_ms(lambda pair: parsing.parse_own(*pair), list(zip(messages, acks)))])
    info = _common.machine()
    _common.print_table(
        f"mailer ingest parts, {dt.date.today().isoformat()}: {len(letters):,} of the bench's letters, CPU per letter",
        ["part", "ms"], [[name, f"{ms:.2f}"] for name, ms in rows],
        ["each part alone in one process (no SMTP, no threads); the two totals commit once per letter, "
         "the parts under them are the best of 5 passes",
         f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, SQLite {info['sqlite']}"],
    )
    return 0


def summarise(name: str, result: dict, letters: int) -> dict:
    lat = result["latencies"]
    return {
        "name": name,
        "rate": len(lat) / result["wall"] if result["wall"] else 0.0,
        "p50": percentile(lat, 50) * 1000,
        "p99": percentile(lat, 99) * 1000,
        "max": max(lat) * 1000 if lat else 0.0,
        "ok": len(lat),
        "errors": result["error_count"],
        "server_cpu_per_letter": result["server_cpu"] / max(1, len(lat)) * 1e6,
        "client_cpu_per_letter": result["client_cpu"] / max(1, letters) * 1e6,
    }


#: Open loop: every acknowledgement queued within this long of its letter's 250.
AIM_OPEN_P99_MS = 30.0
AIM_ACK_LAG_S = 2.0


_MODE_NAMES = {"process": "worker process", "thread": "in-process pipeline"}


def _row(r: dict, cpu_per_letter: float) -> list[str]:
    return [r["name"], f"{r['rate']:,.0f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}", f"{r['max']:.1f}",
            f"{cpu_per_letter:,.0f}", f"{r['ok']:,}", str(r["errors"])]


def _pipeline_note(args, raw: dict) -> str:
    return (f"{raw['acknowledged']:,} of {args.letters:,} letters acknowledged into the Maildir, "
            f"the last {raw['acks_done_after']:.1f} s after the last 250 ({raw['topics']} topics); "
            f"server CPU to the last acknowledgement {raw['server_cpu_to_last_ack'] / args.letters * 1e6:,.0f} us "
            "per letter")


def _open_loop_note(args, open_loop: dict, raw_open: dict) -> str:
    lags = raw_open["ack_lags"]
    within = sum(lag <= AIM_ACK_LAG_S for lag in lags)
    kept_up = within == args.letters
    met = open_loop["p99"] < AIM_OPEN_P99_MS and kept_up
    return (f"open loop {args.open_rate:g}/s: mailer p50 {open_loop['p50']:.1f} ms, p99 {open_loop['p99']:.1f} ms "
            f"(aim < {AIM_OPEN_P99_MS:.0f} ms); pipeline: {within:,} of {args.letters:,} acknowledgements in the "
            f"Maildir within {AIM_ACK_LAG_S:g} s of their letter's 250 (slowest {max(lags, default=float('nan')):.2f} s, "
            f"p99 {percentile(lags, 99) if lags else float('nan'):.2f} s): " + ("aims met" if met else "aim MISSED"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A short run: 1,000 letters.")
    parser.add_argument("--letters", type=int, default=None, help="Letters to send (default 5,000).")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent SMTP clients (default 16).")
    parser.add_argument("--client", choices=("raw", "aiosmtplib", "smtplib"), default="raw",
                        help="How the client speaks SMTP (default: asyncio streams).")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="Offer letters at this many per second (open loop) instead of as fast as the "
                             "clients can; latency then shows what a sender sees at that load.")
    parser.add_argument("--open-rate", type=float, default=200.0,
                        help="Also run mailer open loop at this many letters a second (default 200; 0: skip).")
    parser.add_argument("--pipeline", choices=("process", "thread", "both"), default="process",
                        help="Where mailer serve files and acknowledges letters: a worker process (default), a "
                             "thread of the server, or both servers in this run, side by side.")
    parser.add_argument("--no-pin", action="store_true", help="Do not pin client and server to separate cores.")
    parser.add_argument("--profile", choices=("py-spy", "py-spy-gil", "cprofile"),
                        help="Profile the mailer server (figures get slower).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder (database, Maildir, log).")
    parser.add_argument("--json", action="store_true",
                        help="Also print the figures as one JSON line (to compare runs).")
    parser.add_argument("--parts", action="store_true",
                        help="Instead of serving: the CPU per letter of each part of the work, measured alone.")
    parser.add_argument("--role", choices=("bench", "client", "bare-server"), default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.letters is None:
        args.letters = 1000 if args.quick else 5000
    if args.rate and args.client == "smtplib":
        parser.error("--rate needs an asyncio client: --client raw or aiosmtplib")
    if args.role == "client":
        return client_main(args)
    if args.role == "bare-server":
        return bare_server_main(args)
    if args.parts:
        if args.letters == 5000:
            args.letters = 300
        return parts_main(args)

    cpus = None
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not args.no_pin and len(available) >= 2:
        cpus = ({available[0]}, {available[1]})
    work = Path(tempfile.mkdtemp(prefix="mailer-bench-ingest-"))
    modes = ("process", "thread") if args.pipeline == "both" else (args.pipeline,)
    runs: dict[str, dict] = {}
    try:
        bare = summarise("bare aiosmtpd (250 only)", bench_bare(args, cpus), args.letters)
        for mode in modes:
            run: dict = {}
            mode_work = work / mode
            mode_work.mkdir()
            run["raw"] = bench_mailer(args, mode_work, cpus, mode)
            run["summary"] = summarise(f"mailer serve ({_MODE_NAMES[mode]}), to the 250", run["raw"], args.letters)
            run["raw_open"] = run["open"] = None
            if args.open_rate and not args.rate:
                open_args = argparse.Namespace(**{**vars(args), "rate": args.open_rate, "profile": None})
                open_work = mode_work / "open-loop"
                open_work.mkdir()
                run["raw_open"] = bench_mailer(open_args, open_work, cpus, mode)
                run["open"] = summarise(f"mailer serve ({_MODE_NAMES[mode]}), open loop {args.open_rate:g}/s",
                                        run["raw_open"], args.letters)
            runs[mode] = run
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    # The summary line (checks read it) is the first server's: the worker process unless asked otherwise.
    raw_mailer, mailer = runs[modes[0]]["raw"], runs[modes[0]]["summary"]
    raw_open, open_loop = runs[modes[0]]["raw_open"], runs[modes[0]]["open"]
    ratio = mailer["rate"] / bare["rate"] if bare["rate"] else 0.0
    rows = [_row(bare, bare["server_cpu_per_letter"])]
    for mode in modes:
        run = runs[mode]
        rows.append(_row(run["summary"], run["summary"]["server_cpu_per_letter"]))
        to_last_ack = args.letters / (run["raw"]["wall"] + run["raw"]["acks_done_after"])
        rows.append([f"mailer serve ({_MODE_NAMES[mode]}), to the last acknowledgement", f"{to_last_ack:,.0f}",
                     "", "", "", f"{run['raw']['server_cpu_to_last_ack'] / args.letters * 1e6:,.0f}",
                     f"{run['raw']['acknowledged']:,} acks", ""])
        if run["open"]:
            rows.append(_row(run["open"], run["raw_open"]["server_cpu_to_last_ack"] / args.letters * 1e6))
    others = [
        f"{_MODE_NAMES[mode]}: mailer / bare {runs[mode]['summary']['rate'] / bare['rate'] if bare['rate'] else 0:.2f}, "
        f"p99 {runs[mode]['summary']['p99']:.1f} ms; " + _pipeline_note(args, runs[mode]["raw"])
        + ("; " + _open_loop_note(args, runs[mode]["open"], runs[mode]["raw_open"]) if runs[mode]["open"] else "")
        for mode in modes[1:]
    ]
    info = _common.machine()
    notes = [
        f"open loop: letters offered at {args.rate:g}/s, latency counted from when each was due"
        if args.rate else "closed loop: each client sends its next letter as soon as the last is answered",
        f"mailer / bare = {ratio:.2f} (aim >= {AIM_RATIO}); mailer p99 {mailer['p99']:.1f} ms (aim < {AIM_P99_MS:.0f} ms): "
        + ("aims met" if ratio >= AIM_RATIO and mailer["p99"] < AIM_P99_MS else "aim MISSED"),
        f"pipeline ({_MODE_NAMES[modes[0]]}): " + _pipeline_note(args, raw_mailer),
        *([_open_loop_note(args, open_loop, raw_open)] if open_loop else []),
        *others,
        f"client: {args.client}, {args.clients} {'at most ' if args.rate else ''}concurrent, one connection per letter, "
        f"{bare['client_cpu_per_letter']:,.0f} us client CPU per letter; "
        + (f"server pinned to CPU {min(cpus[0])}, client to CPU {min(cpus[1])}" if cpus else "not pinned"),
        f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, SQLite {info['sqlite']}",
    ]
    if args.keep:
        notes.append(f"kept: {work}")
    for r, raw in ((bare, {}), *((runs[m]["summary"], runs[m]["raw"]) for m in modes)):
        if r["errors"]:
            notes.append(f"{r['name']}: {r['errors']} letters failed {(raw.get('errors') or [])[:3]}")
    if args.json:
        print(json.dumps({
            "letters": args.letters, "pipeline": modes[0], "ratio": round(ratio, 3),
            **{f"{key}_{name}": round(r[name], 2) for key, r in (("bare", bare), ("mailer", mailer))
               for name in ("rate", "p50", "p99", "max", "server_cpu_per_letter")},
            "acks_done_after": round(raw_mailer["acks_done_after"], 2),
            "server_cpu_to_last_ack_per_letter": round(raw_mailer["server_cpu_to_last_ack"] / args.letters * 1e6),
            "errors": mailer["errors"] + bare["errors"],
            **({"open_rate": args.open_rate, "open_p50": round(open_loop["p50"], 2),
                "open_p99": round(open_loop["p99"], 2),
                "open_slowest_ack_s": round(max(raw_open["ack_lags"], default=float("nan")), 2),
                "open_acks_within_2s": sum(lag <= 2.0 for lag in raw_open["ack_lags"])} if open_loop else {}),
        }))
    _common.print_table(
        f"mailer ingest bench, {dt.date.today().isoformat()}: {args.letters:,} letters",
        ["server", "letters/s", "p50 ms", "p99 ms", "max ms", "server CPU us/letter", "250s", "errors"],
        rows, notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
