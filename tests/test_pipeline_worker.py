"""The pipeline worker process (``[pipeline] worker = "process"``), over real SMTP.

The service files and answers letters in a child process: letters sent over
loopback SMTP must be acknowledged (mail in the Maildir, rows in the file),
the child must be restarted when it is killed, stopped with the service, and
never outlive a service that was killed itself.
"""

from __future__ import annotations

import collections
import email
import fcntl
import json
import os
import signal
import smtplib
from email import policy
from pathlib import Path

import pytest

from conftest import letter, make_config, rows, send, wait_for
from mailer.app.background import BackgroundService
from mailer.app.pipeline_process import PipelineProcess, lock_path


def worker_config(tmp_path: Path):
    return make_config(tmp_path, pipeline={"worker": "process"}, acknowledgements={"max_per_hour": 0})


def send_letters(port: int, first: int, count: int) -> list[str]:
    """Send ``count`` letters from different readers; return their Message-IDs (each got a 250)."""
    ids = []
    for n in range(first, first + count):
        message_id = f"<worker{n}@example.org>"
        raw = letter(f"Letter {n}", f"Dear column,\r\nthis is letter {n}.\r\n",
                     sender=f"Reader {n} <reader{n}@example.org>", message_id=message_id)
        code, _ = send(port, raw, mail_from=f"reader{n}@example.org")
        assert code == 250
        ids.append(message_id)
    return ids


def acknowledged(tmp_path: Path) -> collections.Counter:
    """In-Reply-To of every acknowledgement in the Maildir, counted."""
    new = tmp_path / "maildir" / "new"
    files = sorted(new.iterdir()) if new.exists() else []
    return collections.Counter(
        email.message_from_bytes(p.read_bytes(), policy=policy.default)["In-Reply-To"] for p in files)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_letters_are_acknowledged_by_a_worker_process_at_a_lower_priority(tmp_path):
    with BackgroundService(worker_config(tmp_path)) as running:
        pipeline = running.service.pipeline
        assert isinstance(pipeline, PipelineProcess)
        worker = pipeline.pid
        assert worker is not None and worker != os.getpid()
        ids = send_letters(running.smtp_port, 0, 6)
        wait_for(lambda: set(acknowledged(tmp_path)) == set(ids), timeout=30,
                 message="an acknowledgement for every letter")
        # The filing and answering happened in the worker: it runs 10 below the service.
        assert niceness(worker) - niceness(os.getpid()) == 10
    assert max(acknowledged(tmp_path).values()) == 1
    db = tmp_path / "mailer.db"
    assert rows(db, "SELECT count(*) AS n FROM arrivals")[0]["n"] == 0
    assert rows(db, "SELECT count(*) AS n FROM messages WHERE direction = 'inbound' "
                    "AND processed_at IS NOT NULL")[0]["n"] == 6
    assert {r["status"]: r["n"] for r in rows(db, "SELECT status, count(*) AS n FROM outbox GROUP BY status")} \
        == {"sent": 6}


def test_the_listener_tells_the_worker_when_senders_are_connected(tmp_path):
    # The worker yields to senders: it reads a byte the service sets while a session is open.
    with BackgroundService(worker_config(tmp_path)) as running:
        pipeline = running.service.pipeline
        flag = lambda: running.call(_flag_value, pipeline)  # noqa: E731 - read on the service's loop
        assert flag() == 0
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
            client.ehlo("busy.example")
            wait_for(lambda: flag() == 1, timeout=5, message="the busy byte set")
        wait_for(lambda: flag() == 0, timeout=5, message="the busy byte cleared")


async def _flag_value(pipeline: PipelineProcess) -> int:
    return pipeline._flag[0]


def test_mailer_status_says_whether_the_worker_runs(tmp_path):
    from click.testing import CliRunner

    from configfile import write_config_file
    from mailer.cli import main

    config = worker_config(tmp_path)
    config_file = write_config_file(config, tmp_path / "mailer.toml")

    def status() -> dict:
        result = CliRunner().invoke(main, ["--config", str(config_file), "status", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["pipeline"]

    with BackgroundService(config) as running:
        running.call(_wait_ready, running.service.pipeline)
        assert status() == {"worker": "process", "worker_running": True}
        human = CliRunner().invoke(main, ["--config", str(config_file), "status"]).output
        assert "pipeline     worker process running" in human
    assert status() == {"worker": "process", "worker_running": False}


def test_a_killed_worker_is_restarted_and_every_letter_is_acknowledged_once(tmp_path):
    with BackgroundService(worker_config(tmp_path)) as running:
        pipeline = running.service.pipeline
        running.call(_wait_ready, pipeline)
        first = pipeline.pid
        ids = send_letters(running.smtp_port, 0, 10)
        os.kill(first, signal.SIGKILL)
        ids += send_letters(running.smtp_port, 10, 10)
        wait_for(lambda: pipeline.pid not in (None, first), timeout=30, message="a new worker")
        wait_for(lambda: set(acknowledged(tmp_path)) == set(ids), timeout=60,
                 message="an acknowledgement for every letter after the restart")
        assert pipeline.restarts == 1
        assert not process_alive(first)
    assert max(acknowledged(tmp_path).values()) == 1, "a letter was acknowledged twice"
    assert {r["status"]: r["n"] for r in rows(tmp_path / "mailer.db",
                                              "SELECT status, count(*) AS n FROM outbox GROUP BY status")} \
        == {"sent": 20}


async def _wait_ready(pipeline: PipelineProcess) -> None:
    await pipeline.ready.wait()


def test_the_worker_stops_with_the_service_and_files_what_was_received(tmp_path):
    with BackgroundService(worker_config(tmp_path)) as running:
        worker = running.service.pipeline.pid
        ids = send_letters(running.smtp_port, 0, 8)
    # The service stopped the worker: it is gone, and every letter received is filed
    # (handled at the next start if the stop came first, as with the in-process pipeline).
    assert not process_alive(worker)
    db = tmp_path / "mailer.db"
    assert rows(db, "SELECT count(*) AS n FROM arrivals")[0]["n"] == 0
    filed = rows(db, "SELECT message_id FROM messages WHERE direction = 'inbound'")
    assert sorted(r["message_id"] for r in filed) == sorted(ids)


def test_a_second_worker_waits_for_the_lock_of_the_first(tmp_path, capfd):
    # Another worker already holds the archive's pipeline lock (here: the test).
    config = worker_config(tmp_path)
    config.storage.database.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path(config.storage.database), "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with BackgroundService(config) as running:
            ids = send_letters(running.smtp_port, 0, 3)
            # The worker says it waits (its log goes to the service's stderr), and
            # letters are kept (250) but not filed or answered while the other one works.
            said = []
            wait_for(lambda: said.append(capfd.readouterr().err) or "another pipeline worker is running"
                     in "".join(said), timeout=30, message="the worker to say it waits")
            assert rows(tmp_path / "mailer.db", "SELECT count(*) AS n FROM arrivals")[0]["n"] == 3
            assert not acknowledged(tmp_path)
            fcntl.flock(held, fcntl.LOCK_UN)
            wait_for(lambda: set(acknowledged(tmp_path)) == set(ids), timeout=30,
                     message="the letters acknowledged once the lock was free")


def test_a_service_given_another_clock_runs_the_pipeline_in_process(tmp_path):
    import datetime as dt

    def clock() -> dt.datetime:
        return dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.timezone.utc)

    with BackgroundService(worker_config(tmp_path), clock=clock) as running:
        assert not isinstance(running.service.pipeline, PipelineProcess)


@pytest.mark.slow
def test_no_worker_outlives_a_service_killed_with_sigkill(tmp_path):
    from test_crash import ServeProcess, write_config
    from conftest import free_port

    port = free_port()
    server = ServeProcess(write_config(tmp_path, port), port, tmp_path / "serve.log")
    server.start()
    try:
        worker = wait_for(lambda: _children(server.proc.pid), timeout=30, message="the worker process")[0]
        ids = send_letters(port, 0, 5)
        server.kill9()
        # The worker sees its stdin closed, finishes what it holds and exits.
        wait_for(lambda: not process_alive(worker), timeout=30, message="the orphaned worker to exit")
        server.start()
        wait_for(lambda: set(acknowledged(tmp_path)) == set(ids), timeout=60,
                 message="every letter acknowledged after the restart")
    finally:
        server.stop()
    assert max(acknowledged(tmp_path).values()) == 1
    assert "pipeline worker ready" in server.log.read_text()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_healthz_says_the_pipeline_is_restarting_while_the_worker_is_dead(tmp_path, monkeypatch):
    # A long wait before the restart, so the dead worker is seen from outside.
    import httpx

    from mailer.app import pipeline_process

    monkeypatch.setattr(pipeline_process, "RESTART_LEAST_SECONDS", 30.0)
    config = make_config(tmp_path, pipeline={"worker": "process"}, web={"enabled": True})

    def health() -> tuple[int, dict]:
        answer = httpx.get(f"http://127.0.0.1:{config.web.port}/healthz", timeout=10)
        return answer.status_code, answer.json()["checks"]

    with BackgroundService(config) as running:
        running.call(_wait_ready, running.service.pipeline)
        assert health() == (200, {"database": "ok", "listener": "ok", "writer": "ok", "pipeline": "ok"})
        os.kill(running.service.pipeline.pid, signal.SIGKILL)
        code, checks = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(health()),
                                message="/healthz to fail while the worker is dead")
        assert checks["pipeline"] == "restarting" and checks["listener"] == "ok"
