"""`GET /healthz`: what a load balancer or monitor asks, over real HTTP to a running service.

200 only when the archive answers a read and the SMTP listener is serving;
503 naming the failed check when the listener is stopped or the database
file is garbage. No login, no cookie, nothing private in the answer, while
the desk's own pages still send a stranger to the login page.
"""

from __future__ import annotations

import os

import httpx
import pytest

from mailer.app.background import BackgroundService

from conftest import free_port, make_config


@pytest.fixture
def running(tmp_path):
    """A service with its web server on a free port."""
    config = make_config(tmp_path, web={"enabled": True, "port": free_port()})
    with BackgroundService(config) as service:
        yield service


def healthz(running) -> httpx.Response:
    # A fresh client each time: no cookie jar, nothing carried between calls.
    return httpx.get(f"http://127.0.0.1:{running.config.web.port}/healthz", timeout=10)


def test_a_running_service_is_healthy_without_any_login(running):
    answer = healthz(running)

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "checks": {"database": "ok", "listener": "ok", "writer": "ok", "pipeline": "ok"}}
    assert answer.headers["cache-control"] == "no-store"
    assert "set-cookie" not in answer.headers
    head = httpx.head(f"http://127.0.0.1:{running.config.web.port}/healthz", timeout=10)
    assert head.status_code == 200

    # The desk behind it is still closed to the same stranger.
    desk = httpx.get(f"http://127.0.0.1:{running.config.web.port}/", timeout=10)
    assert desk.status_code == 303 and desk.headers["location"] == "/login"


def test_a_stopped_listener_makes_the_service_unhealthy(running):
    running.call(running.service.stop_listener)

    answer = healthz(running)

    assert answer.status_code == 503
    assert answer.json() == {"status": "unhealthy", "checks": {"database": "ok", "listener": "not serving", "writer": "ok", "pipeline": "ok"}}
    assert answer.headers["cache-control"] == "no-store"


def test_a_database_that_does_not_answer_makes_the_service_unhealthy(running, tmp_path):
    database = running.config.storage.database
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not an SQLite database at all\n" * 200)
    # Replaced, not overwritten: the service's writer keeps its open file,
    # and any new connection (the check's) meets the garbage.
    os.replace(garbage, database)

    answer = healthz(running)

    assert answer.status_code == 503
    assert answer.json() == {"status": "unhealthy", "checks": {"database": "failed", "listener": "ok", "writer": "ok", "pipeline": "ok"}}
    assert str(database) not in answer.text and "not a database" not in answer.text


def test_a_missing_database_file_is_unhealthy_and_not_created(running):
    database = running.config.storage.database
    os.unlink(database)

    answer = healthz(running)

    assert answer.status_code == 503
    assert answer.json()["checks"]["database"] == "failed"
    assert not database.exists()
