"""Crash and fault: a 250 is a promise that survives kill -9, a full disk and a flaky relay.

* ``mailer serve`` runs as a real child process and is killed with SIGKILL in
  the middle of a burst, then started again, several times over;
* the archive lives on a 2 MB tmpfs that is filled to the last byte, then
  freed (root only: tests and CI run as root; skipped with the reason otherwise);
* the relay is a real TCP server that refuses, stalls and hangs up mid-DATA
  before it finally behaves.

The kill -9 and relay cases take seconds, so they are marked slow (``pytest -m slow``).
"""

from __future__ import annotations

import collections
import email
import errno
import os
import random
import shutil
import signal
import smtplib
import socket
import socketserver
import subprocess
import sys
import threading
import time
from email import policy
from pathlib import Path

import pytest

from conftest import REPO, free_port, letter, make_config, rows, wait_for
from mailer.app.background import BackgroundService

LETTERS = "letters@column.example"


# -- helpers -------------------------------------------------------------------------------


def write_config(folder: Path, port: int, **sections: dict) -> Path:
    """A config file for a `mailer serve` child: fixed port, Maildir, no web desk."""
    values = {
        "smtp": {"port": port},
        "storage": {"database": "mailer.db"},
        "delivery": {"maildir": "maildir", "retry_base_seconds": 0.2, "retry_max_seconds": 1.0},
        "web": {"enabled": False},
        "digest": {"schedules": "schedules"},
        # These tests count one acknowledgement per letter of a burst; the
        # hourly cap has its own test (test_backscatter.py).
        "acknowledgements": {"max_per_hour": 0},
    }
    for name, extra in sections.items():
        values.setdefault(name, {}).update(extra)
    text = ""
    for name, table in values.items():
        text += f"[{name}]\n"
        for key, value in table.items():
            if isinstance(value, bool):
                text += f"{key} = {str(value).lower()}\n"
            elif isinstance(value, str):
                text += f'{key} = "{value}"\n'
            else:
                text += f"{key} = {value}\n"
    path = folder / "mailer.toml"
    path.write_text(text, encoding="utf-8")
    return path


class ServeProcess:
    """`python -m mailer --config X serve` as a child process we can kill."""

    def __init__(self, config_path: Path, port: int, log: Path) -> None:
        self.config_path = config_path
        self.port = port
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailer", "--config", str(self.config_path), "serve"],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"mailer serve exited: {self.log.read_text()[-2000:]}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mailer serve did not start listening")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait: the graceful way."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def inbound_by_message_id(db_path: Path) -> dict[str, list[bytes]]:
    """Every letter the archive holds, filed or still arriving (received, not filed yet)."""
    found: dict[str, list[bytes]] = collections.defaultdict(list)
    for row in rows(db_path, "SELECT m.message_id, r.raw FROM messages m JOIN raw_messages r ON r.id = m.id "
                             "WHERE m.direction = 'inbound' "
                             "UNION ALL SELECT message_id, raw FROM arrivals"):
        found[row["message_id"]].append(bytes(row["raw"]))
    return found


def maildir_files(folder: Path) -> list[Path]:
    new = folder / "new"
    return sorted(new.iterdir()) if new.exists() else []


# -- kill -9 in the middle of a burst --------------------------------------------------------


class BurstClient:
    """Threads that deliver letters like a patient MTA: retry until a 250, never give up."""

    def __init__(self, port: int, letters: list[tuple[str, str, bytes]], threads: int = 4) -> None:
        self.port = port
        self.queue = collections.deque(letters)
        self.lock = threading.Lock()
        self.accepted: dict[str, bytes] = {}  # Message-ID -> bytes that got a 250
        self.unanswered: set[str] = set()     # Message-IDs that had an attempt with no answer
        self.deferred: set[str] = set()       # ...or that got a 4xx
        self.refused: list[tuple[str, int, bytes]] = []
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "the client could not deliver everything"

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    return
                item = self.queue.popleft()
            message_id, sender, raw = item
            while True:
                outcome = self._attempt(sender, raw)
                if outcome == 250:
                    with self.lock:
                        self.accepted[message_id] = raw
                    break
                with self.lock:
                    if outcome is None:
                        self.unanswered.add(message_id)
                    elif 400 <= outcome < 500:
                        self.deferred.add(message_id)
                    else:
                        self.refused.append((message_id, outcome, raw))
                        break
                time.sleep(0.05)  # the server is down or restarting: try again shortly

    def _attempt(self, sender: str, raw: bytes) -> int | None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                client.ehlo("burst.example")
                client.mail(sender)
                code, _ = client.rcpt(LETTERS)
                if code != 250:
                    return code
                code, _ = client.data(raw)
                return code
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError):
            return None  # no answer: we cannot know whether it was kept, so send it again
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code


#: Letters received but not filed yet, or filed but not handled yet.
UNFINISHED = ("SELECT (SELECT count(*) FROM arrivals) + (SELECT count(*) FROM messages "
              "WHERE direction = 'inbound' AND processed_at IS NULL) AS n")


def worker_pid(server: ServeProcess) -> int:
    """The pid of the pipeline worker process `mailer serve` runs now (waits for one to run)."""
    def child() -> int | None:
        try:
            found = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
        except FileNotFoundError:
            return None
        return int(found[0]) if found else None
    return wait_for(child, timeout=30, interval=0.005, message="the pipeline worker process")


@pytest.mark.slow
@pytest.mark.parametrize("pipeline, killed", [
    ("process", "service"),  # the service and, through its stdin, the worker it leaves behind
    ("process", "worker"),   # the worker alone, mid-batch; the service restarts it
    ("thread", "service"),   # one process doing everything
])
def test_every_letter_that_got_250_survives_kill_9_exactly_once_and_unanswered_ones_are_retried(
        tmp_path, pipeline, killed):
    seed = int(os.environ.get("MAILER_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    port = free_port()
    config_path = write_config(tmp_path, port, pipeline={"worker": pipeline})
    server = ServeProcess(config_path, port, tmp_path / "serve.log")
    letters = []
    for n in range(150):
        message_id = f"<burst{n}.{seed}@example.org>"
        body = f"Dear column,\r\nletter {n} of the burst.\r\n" + "More of my story.\r\n" * rng.randint(0, 60)
        raw = letter(f"Burst {n}", body, sender=f"Reader {n} <reader{n}@example.org>", message_id=message_id)
        letters.append((message_id, f"reader{n}@example.org", raw))
    client = BurstClient(port, letters)

    server.start()
    client.start()
    accepted_at_kill = []
    pending_at_kill = []  # letters received but not yet filed or answered, at each kill of the worker
    # Three random moments in the burst: when a random share of it has been
    # accepted (the service) or acknowledged (the worker, busy answering a
    # backlog), give or take a few milliseconds.
    targets = sorted(rng.randint(len(letters) // 10, len(letters) * 9 // 10) for _ in range(3))
    try:
        for target in targets:
            if killed == "worker":
                wait_for(lambda: len(maildir_files(tmp_path / "maildir")) >= target, timeout=60, interval=0.001,
                         message=f"{target} letters acknowledged (seed {seed})")
                time.sleep(rng.uniform(0.0, 0.02))
                worker = worker_pid(server)
                os.kill(worker, signal.SIGKILL)
                accepted_at_kill.append(len(client.accepted))
                pending_at_kill.append(rows(tmp_path / "mailer.db", UNFINISHED)[0]["n"])
                # The service restarts it by itself (after a short wait, longer each time);
                # the next kill hits a worker that is at work again.
                wait_for(lambda: f"pipeline worker ready (pid {worker_pid(server)}," in server.log.read_text()
                         and worker_pid(server) != worker, timeout=30, message=f"a new worker (seed {seed})")
                continue
            wait_for(lambda: len(client.accepted) >= target, timeout=60, interval=0.001,
                     message=f"{target} letters accepted (seed {seed})")
            time.sleep(rng.uniform(0.0, 0.02))
            server.kill9()
            accepted_at_kill.append(len(client.accepted))
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        client.join(timeout=90)
        # Let the pipeline acknowledge everything, then stop gracefully.
        maildir = tmp_path / "maildir"
        wait_for(lambda: len(maildir_files(maildir)) >= len(letters), timeout=60,
                 message=f"an acknowledgement for every letter (seed {seed})")
    finally:
        server.stop()

    where = f"(seed {seed}; rerun with MAILER_CRASH_SEED={seed})"
    assert len(accepted_at_kill) == 3
    if killed == "service":
        assert accepted_at_kill[-1] < len(letters), \
            f"every kill landed in the burst: {accepted_at_kill} of {len(letters)} accepted {where}"
    assert not client.refused, f"permanent refusals {client.refused[:3]} {where}"
    if killed == "service":
        assert client.unanswered, f"no kill landed while a letter was in flight {where}"
    else:
        assert any(pending_at_kill), f"no kill landed while the worker had letters to do {pending_at_kill} {where}"
    archived = inbound_by_message_id(tmp_path / "mailer.db")
    for message_id, raw in client.accepted.items():
        copies = archived.get(message_id, [])
        assert len(copies) == 1, f"{message_id}: {len(copies)} copies in the archive {where}"
        assert copies[0] == raw, f"{message_id}: archived bytes differ from what was sent {where}"
    assert set(archived) == set(client.accepted), f"nothing archived that was not sent {where}"
    assert len(client.accepted) == len(letters)

    # Every letter was handled exactly once after the restarts: one acknowledgement each.
    acks = [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in maildir_files(tmp_path / "maildir")]
    answered = collections.Counter(a["In-Reply-To"] for a in acks)
    assert set(answered) == set(client.accepted), where
    assert max(answered.values()) == 1, f"acknowledged twice: {[k for k, v in answered.items() if v > 1]} {where}"
    outbox = rows(tmp_path / "mailer.db", "SELECT status, count(*) AS n FROM outbox GROUP BY status")
    assert {r["status"]: r["n"] for r in outbox} == {"sent": len(letters)}, where
    assert rows(tmp_path / "mailer.db", UNFINISHED)[0]["n"] == 0, f"every letter filed and handled {where}"


# -- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs mounted under tmp_path (needs root with CAP_SYS_ADMIN, as in CI)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (tests and CI run as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full to the last byte."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        while True:  # the tail: byte by byte
            try:
                out.write(b"\0")
            except OSError:
                break
    return filler


def _send(port: int, raw: bytes, sender: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("disk.example")
        client.mail(sender)
        client.rcpt(LETTERS)
        try:
            return client.data(raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


def test_full_disk_gets_451_the_listener_stays_up_and_takes_letters_once_there_is_room(tmp_path, small_disk):
    config = make_config(tmp_path, storage={"database": str(small_disk / "mailer.db")})
    before = letter("Before", "Dear column,\r\nthe disk is fine.\r\n", message_id="<before@example.org>")
    during = [letter(f"During {n}", "Dear column,\r\nthe disk is full.\r\n" * 40, message_id=f"<during{n}@example.org>")
              for n in range(20)]
    with BackgroundService(config) as running:
        assert _send(running.smtp_port, before, "reader@example.org")[0] == 250
        filler = fill(small_disk)

        # Pages SQLite already holds may take a letter or two (a true 250: it is kept);
        # after that every letter is deferred, never lost and never half-kept.
        answers = []
        for raw in during:
            answers.append((raw, *_send(running.smtp_port, raw, "reader@example.org")))
            if [code for _, code, _ in answers[-3:]] == [451, 451, 451]:
                break
        codes = [code for _, code, _ in answers]
        assert set(codes) <= {250, 451} and codes[-3:] == [451, 451, 451], codes
        assert all(b"4.3.0" in text for _, code, text in answers if code == 451)
        deferred = [raw for raw, code, _ in answers if code == 451]
        kept_while_full = [raw for raw, code, _ in answers if code == 250]
        # Still up and talking: a session can start, and say NOOP.
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as probe:
            assert probe.noop()[0] == 250

        filler.unlink()
        # The sending servers try again: now every deferred letter is accepted.
        for raw in deferred:
            assert _send(running.smtp_port, raw, "reader@example.org")[0] == 250
        after = letter("After", "Dear column,\r\nroom again.\r\n", message_id="<after@example.org>")
        assert _send(running.smtp_port, after, "reader@example.org")[0] == 250

    archived = inbound_by_message_id(small_disk / "mailer.db")
    expected = [before, *kept_while_full, *deferred, after]
    for raw in expected:
        message_id = email.message_from_bytes(raw)["Message-ID"]
        assert archived.get(message_id) == [raw], message_id
    assert len(archived) == len(expected)


# -- a relay that refuses, stalls and hangs up -----------------------------------------------


class FlakyRelay:
    """A real SMTP relay on loopback whose behaviour the test switches at will.

    Modes: ``refuse-connect`` (421 banner), ``refuse-data`` (451 after the
    message), ``stall`` (accepts TCP, never says a word), ``drop`` (hangs up
    in the middle of DATA) and ``healthy`` (keeps the message, 250).
    """

    def __init__(self) -> None:
        self.mode = "healthy"
        self.received: list[bytes] = []
        self.seen = collections.Counter()  # mode -> sessions that met it
        self.lock = threading.Lock()
        relay = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                relay._session(self.request, self.rfile)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=True)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.mode = "healthy"
        self.server.shutdown()
        self.server.server_close()

    def _note(self, mode: str) -> None:
        with self.lock:
            self.seen[mode] += 1

    def _stall(self) -> None:
        self._note("stall")
        deadline = time.monotonic() + 30
        while self.mode == "stall" and time.monotonic() < deadline:
            time.sleep(0.05)

    def _session(self, sock: socket.socket, rfile) -> None:
        def say(text: bytes) -> None:
            sock.sendall(text + b"\r\n")

        if self.mode == "stall":
            return self._stall()
        if self.mode == "refuse-connect":
            self._note("refuse-connect")
            return say(b"421 4.3.2 relay busy, try again later")
        say(b"220 relay.example ESMTP flaky")
        while True:
            line = rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if self.mode == "stall":
                return self._stall()
            if verb == b"EHLO":
                sock.sendall(b"250-relay.example\r\n250 8BITMIME\r\n")
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                say(b"250 2.0.0 ok")
            elif verb == b"QUIT":
                return say(b"221 2.0.0 bye")
            elif verb == b"DATA":
                say(b"354 go ahead")
                if self.mode == "drop":
                    self._note("drop")
                    rfile.read(200)  # part of the message, then the line goes dead
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                data = []
                while True:
                    chunk = rfile.readline()
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    data.append(chunk[1:] if chunk.startswith(b".") else chunk)
                if self.mode == "refuse-data":
                    self._note("refuse-data")
                    say(b"451 4.3.0 queue full, try again later")
                    continue
                with self.lock:
                    self.received.append(b"".join(data))
                self._note("healthy")
                say(b"250 2.0.0 queued")
            else:
                say(b"500 5.5.1 what?")


@pytest.mark.slow
def test_acknowledgements_wait_out_a_flaky_relay_and_arrive_exactly_once(tmp_path):
    relay = FlakyRelay()
    relay.mode = "refuse-connect"
    config = make_config(tmp_path, delivery={
        "mode": "smtp", "relay_port": relay.port, "timeout": 1.0, "max_attempts": 1000,
        "retry_base_seconds": 0.1, "retry_max_seconds": 0.3,
    })
    db = config.storage.database

    def outbox():
        return rows(db, "SELECT id, status, attempts, last_error FROM outbox ORDER BY id")

    def every_row_tried_again(since: dict[int, int], needle: str):
        def check():
            current = outbox()
            return len(current) == 3 and all(
                r["status"] == "pending" and r["attempts"] > since.get(r["id"], 0)
                and needle in (r["last_error"] or "") for r in current)
        return check

    try:
        with BackgroundService(config) as running:
            for n in range(3):
                raw = letter(f"Flaky {n}", "Dear column,\r\nwhat is a therapist's job?\r\n",
                             sender=f"Reader {n} <reader{n}@example.org>", message_id=f"<flaky{n}@example.org>")
                with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
                    client.sendmail(f"reader{n}@example.org", [LETTERS], raw)
            for mode, needle in (("refuse-connect", "421"), ("refuse-data", "451"),
                                 ("stall", ""), ("drop", ""), ("refuse-connect", "421")):
                met_before = relay.seen[mode]
                relay.mode = mode
                # A session opened in the previous mode can still fail after the
                # switch (a stalled one ends with EOF), which would count as a
                # retry; so count retries only once a client has met this mode.
                wait_for(lambda: relay.seen[mode] > met_before, timeout=20,
                         message=f"a client met the relay in mode {mode}")
                since = {r["id"]: r["attempts"] for r in outbox()}
                wait_for(every_row_tried_again(since, needle), timeout=20,
                         message=f"every acknowledgement tried against a relay in mode {mode}")
                assert not relay.received
            relay.mode = "healthy"
            wait_for(lambda: all(r["status"] == "sent" for r in outbox()), timeout=20,
                     message="every acknowledgement delivered once the relay is healthy")
            time.sleep(1.0)  # anything sent twice would arrive now
    finally:
        relay.close()

    for mode in ("refuse-connect", "refuse-data", "stall", "drop", "healthy"):
        assert relay.seen[mode] >= 1, f"the relay never met a client in mode {mode}"
    delivered = collections.Counter(
        email.message_from_bytes(raw, policy=policy.default)["In-Reply-To"] for raw in relay.received)
    assert delivered == {f"<flaky{n}@example.org>": 1 for n in range(3)}
    archived = {bytes(r["raw"]) for r in rows(
        db, "SELECT r.raw FROM raw_messages r JOIN messages m ON m.id = r.id WHERE m.kind = 'acknowledgement'")}
    assert set(relay.received) == archived, "the relay got exactly the archived bytes"
