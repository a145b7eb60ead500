"""New topics arrive by themselves: the column's feed, served over real HTTP on loopback.

A tiny http.server serves the feed file (with Last-Modified, and answering
If-Modified-Since with 304, as web servers do); the service runs with a
passed-in clock; the digest arrives at a real SMTP sink. Nothing sleeps:
every wait is on a condition with a deadline.
"""

from __future__ import annotations

import datetime as dt
import email
import http.server
import os
import threading
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.app.background import BackgroundService
from mailer.cli import main
from mailer.newsletter.scheduler import load_schedules
from mailer.store.db import open_database
from mailer.topics import feed as feeds
from mailer.topics import list_topics

from conftest import REPO, SteppingClock, free_port, rows, wait_for
from test_digest import MONDAY_8AM_NEW_YORK, add_subscribers, add_topics, digests_at, smtp_config, write_config_file


def rss(*items: tuple[str, str, str]) -> str:
    """An RSS 2.0 feed of (slug, title, RFC 822 date) items."""
    entries = "".join(
        f"<item><title>{title}</title><link>https://column.example/topics/{slug}.html</link>"
        f"<description>What {title.lower()} asks of us.</description><category>change</category>"
        f"<pubDate>{date}</pubDate></item>"
        for slug, title, date in items
    )
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Enjoy Your Changes</title>'
            f"<link>https://column.example/</link><description>The column</description>{entries}</channel></rss>")


class FeedServer:
    """The column's website: serves one folder, and remembers each request's headers."""

    def __init__(self, folder: Path) -> None:
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                requests.append(dict(self.headers))
                super().do_GET()

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/feed.xml"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    server = FeedServer(folder)
    server.folder = folder
    yield server
    server.close()


def publish(site, text: str, mtime: float) -> None:
    """Write the feed as the column's website would, with a given modification time."""
    path = site.folder / "feed.xml"
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_a_piece_added_to_the_feed_is_in_the_next_digest_with_no_command_run(tmp_path, smtp_sink, site):
    # The archive knows an old piece; the feed then gets a new one on Friday.
    # The Monday 08:00 digest is due when the service starts: the scheduler
    # checks the feed just before composing, so the new piece is in it.
    publish(site, rss(("old-piece", "An old piece", "Mon, 02 Nov 2026 12:00:00 GMT")), 1_700_000_000)
    config = smtp_config(tmp_path, smtp_sink, topics={"feed_url": site.url})
    schedules = Path(config.digest.schedules)
    schedules.mkdir(parents=True, exist_ok=True)
    (schedules / "weekly_digest.toml").write_text('cron = "0 8 * * mon"\n')
    add_subscribers(config, 1)
    db = open_database(config.storage.database)
    assert feeds.refresh_configured_feed(config, clock=lambda: MONDAY_8AM_NEW_YORK - dt.timedelta(days=5)).added == 1
    db.close()
    publish(site, rss(("old-piece", "An old piece", "Mon, 02 Nov 2026 12:00:00 GMT"),
                      ("letting-go", "Letting go of the plan", "Fri, 27 Nov 2026 15:00:00 GMT")), 1_700_100_000)

    clock = SteppingClock(MONDAY_8AM_NEW_YORK + dt.timedelta(minutes=1))
    with BackgroundService(config, clock=clock):
        message = wait_for(lambda: digests_at(smtp_sink), message="the scheduled digest at the relay")[0]
    digest = email.message_from_bytes(message["data"], policy=policy.default)
    text = digest.get_body(("plain",)).get_content()
    assert "Letting go of the plan" in text
    assert "An old piece" not in text  # months old: not news
    assert digest["Subject"].endswith("1 new piece this week")
    # The second fetch was conditional, and the feed's validator is kept.
    assert site.requests[-1].get("If-Modified-Since")
    state = rows(config.storage.database, "SELECT * FROM topic_feed")[0]
    assert state["last_modified"] and state["error"] is None and state["added"] == 1


def test_an_unchanged_feed_costs_a_304_and_imports_nothing(tmp_path, site):
    publish(site, rss(("letting-go", "Letting go of the plan", "Fri, 27 Nov 2026 15:00:00 GMT")), 1_700_000_000)
    db = open_database(tmp_path / "archive.sqlite3")
    clock = lambda: MONDAY_8AM_NEW_YORK  # noqa: E731
    first = feeds.refresh_feed(db, site.url, clock=clock)
    again = feeds.refresh_feed(db, site.url, clock=clock)
    assert (first.status, first.added) == ("updated", 1)
    assert (again.status, again.added) == ("unchanged", 0)
    assert "If-Modified-Since" not in site.requests[0] and site.requests[1]["If-Modified-Since"]
    assert len(list_topics(db)) == 1
    db.close()


def test_a_feed_served_with_an_etag_is_asked_with_if_none_match(tmp_path):
    # Some sites (and CDNs) give an ETag and no Last-Modified.
    body = rss(("letting-go", "Letting go of the plan", "Fri, 27 Nov 2026 15:00:00 GMT")).encode()
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("If-None-Match"))
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.send_header("ETag", '"v1"')
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/feed"
        db = open_database(tmp_path / "archive.sqlite3")
        assert feeds.refresh_feed(db, url, clock=lambda: MONDAY_8AM_NEW_YORK).added == 1
        assert feeds.refresh_feed(db, url, clock=lambda: MONDAY_8AM_NEW_YORK).status == "unchanged"
        assert seen == [None, '"v1"']
        assert feeds.feed_state(db, url)["etag"] == '"v1"'
        db.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_failing_feed_is_logged_shown_in_status_and_never_blocks_the_digest(tmp_path, smtp_sink, caplog):
    from test_digest import send_now

    dead = f"http://127.0.0.1:{free_port()}/feed.xml"  # nothing listens there
    config = smtp_config(tmp_path, smtp_sink, topics={"feed_url": dead})
    add_topics(config, "2026-11-27")
    add_subscribers(config, 1)
    summary = send_now(config, SteppingClock(MONDAY_8AM_NEW_YORK))
    assert summary.sent == 1  # the topics already known went out
    assert any("topics feed check failed" in r.getMessage() for r in caplog.records)
    result = CliRunner().invoke(main, ["--config", str(_config_file(tmp_path, config, dead)), "status"])
    line = next(l for l in result.output.splitlines() if l.startswith("topics feed"))
    assert "FAILED" in line and "cannot fetch the feed" in line
    refresh = CliRunner().invoke(main, ["--config", str(_config_file(tmp_path, config, dead)), "topics", "refresh"])
    assert refresh.exit_code == 1 and "failed" in refresh.output


def test_topics_refresh_imports_new_pieces_by_hand(tmp_path, site):
    from conftest import make_config

    publish(site, rss(("letting-go", "Letting go of the plan", "Fri, 27 Nov 2026 15:00:00 GMT")), 1_700_000_000)
    config = make_config(tmp_path)
    path = _config_file(tmp_path, config, site.url)
    result = CliRunner().invoke(main, ["--config", str(path), "topics", "refresh"])
    assert result.exit_code == 0 and "1 new, 0 updated" in result.output
    result = CliRunner().invoke(main, ["--config", str(path), "topics", "refresh"])
    assert "no new topics" in result.output


def test_the_shipped_schedules_check_the_feed_hourly():
    found = {s.name: s for s in load_schedules(REPO / "schedules", default_timezone="America/New_York")}
    assert found["topics_feed"].job == "topics_feed"
    fires = [found["topics_feed"].trigger().get_next_fire_time(None, MONDAY_8AM_NEW_YORK + dt.timedelta(hours=h))
             for h in range(3)]
    assert [(b - a) for a, b in zip(fires, fires[1:])] == [dt.timedelta(hours=1)] * 2


def test_the_feed_job_imports_when_the_scheduler_fires_it(tmp_path, site):
    import asyncio

    from mailer.newsletter.scheduler import DigestScheduler
    from conftest import make_config

    publish(site, rss(("letting-go", "Letting go of the plan", "Fri, 27 Nov 2026 15:00:00 GMT")), 1_700_000_000)
    config = make_config(tmp_path, topics={"feed_url": site.url})
    scheduler = DigestScheduler(config, clock=lambda: MONDAY_8AM_NEW_YORK)
    schedule = next(s for s in load_schedules(REPO / "schedules", default_timezone="UTC") if s.job == "topics_feed")

    async def fire():  # what APScheduler calls at the due time
        await scheduler._fire(schedule)
        await asyncio.gather(*scheduler._tasks)

    asyncio.run(fire())
    assert [check.added for check in scheduler.feed_checks] == [1]
    assert [t["slug"] for t in list_topics(open_database(config.storage.database))] == ["letting-go"]


def test_feed_url_must_be_an_http_address(tmp_path):
    from mailer.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="topics.feed_url"):
        config_from_dict({"topics": {"feed_url": "feed.xml"}})


def _config_file(tmp_path, config, url) -> Path:
    path = write_config_file(tmp_path, config)
    path.write_text(path.read_text() + f'[topics]\nfeed_url = "{url}"\n')
    return path
