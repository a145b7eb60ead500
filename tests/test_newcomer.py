"""The newcomer's path: what a new user trips over between a fresh clone and a first digest.

Commands run through click's CliRunner against a real SQLite file; digests go
to a real SMTP sink; the unsubscribe link is followed over HTTP.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib

import httpx
from click.testing import CliRunner

from mailer.app.background import BackgroundService
from mailer.cli import main
from mailer.newsletter import subscribers as subs
from mailer.store.db import open_database

from conftest import REPO, make_config, rows
from test_digest import add_subscribers, add_topics, digests_at, smtp_config, write_config_file


def run(tmp_path, config, *args):
    return CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)), *args])


def test_with_only_old_topics_preview_says_what_to_do_and_since_shows_a_digest(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_topics(config, "2025-03-01", "2025-06-10")  # months old, like the sample catalog
    told = run(tmp_path, config, "digest", "preview")
    assert told.exit_code == 0
    assert "no topics published since" in told.output and "(the newest is from 2025-06-10)" in told.output
    assert "--since 2025-06-10" in told.output and "mailer topics import" in told.output
    shown = run(tmp_path, config, "digest", "preview", "--since", "2025-06-10")
    assert shown.exit_code == 0, shown.output
    assert "1 new piece this week" in shown.output and "A piece from 2025-06-10" in shown.output
    assert "A piece from 2025-03-01" not in shown.output
    bad = run(tmp_path, config, "digest", "preview", "--since", "last week")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_send_since_sends_the_old_pieces_and_the_archive_says_one_piece(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_topics(config, "2025-06-10")
    add_subscribers(config, 1)
    result = run(tmp_path, config, "digest", "send", "--quiet", "--since", "2025-06-01")
    assert result.exit_code == 0 and "sent 1," in result.output
    assert len(digests_at(smtp_sink)) == 1
    body = rows(config.storage.database, "SELECT body_text FROM messages WHERE kind = 'digest'")[0]["body_text"]
    assert "1 new piece (" in body  # not "1 new pieces"


def test_send_test_sends_one_copy_to_the_columnist_and_marks_nothing_sent(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_topics(config, dt.date.today().isoformat())
    add_subscribers(config, 2)
    result = run(tmp_path, config, "digest", "send", "--test", "columnist@column.example")
    assert result.exit_code == 0, result.output
    assert "test copy sent to columnist@column.example" in result.output
    assert [m["rcpt_tos"] for m in digests_at(smtp_sink)] == [["columnist@column.example"]]
    assert rows(config.storage.database, "SELECT count(*) AS n FROM digests")[0]["n"] == 0
    # The real digest still goes out to every subscriber.
    real = run(tmp_path, config, "digest", "send", "--quiet")
    assert "sent 2," in real.output and len(digests_at(smtp_sink)) == 3


def test_preview_to_a_subscriber_has_their_working_unsubscribe_link_and_html_goes_to_stdout(tmp_path):
    from test_subscribers import web_config

    config = web_config(tmp_path)
    add_topics(config, dt.date.today().isoformat())
    db = open_database(config.storage.database)
    subs.add_confirmed(db, "dana@example.org", clock=lambda: dt.datetime.now(dt.timezone.utc))
    db.close()
    shown = run(tmp_path, config, "digest", "preview", "--to", "dana@example.org")
    assert shown.exit_code == 0 and "To: dana@example.org" in shown.output
    link = re.search(r"http://\S+/unsubscribe/[A-Za-z0-9_-]{32}", shown.output).group()
    html = run(tmp_path, config, "digest", "preview", "--to", "dana@example.org", "--html", "-")
    assert html.output.lstrip().startswith("<") and "Subject:" not in html.output and link in html.output
    with BackgroundService(config):
        page = httpx.get(link)
        assert page.status_code == 200
        assert httpx.post(link).status_code == 200
    assert rows(config.storage.database, "SELECT status FROM subscribers")[0]["status"] == "unsubscribed"
    nobody = run(tmp_path, config, "digest", "preview", "--to", "nobody@example.org")
    assert nobody.exit_code == 1 and "not a subscriber" in nobody.output


def test_subscribers_add_says_where_the_confirmation_went(tmp_path):
    config = make_config(tmp_path)
    result = run(tmp_path, config, "subscribers", "add", "dana@example.org")
    assert result.exit_code == 0
    assert f"{config.delivery.maildir}/new/" in result.output and "link confirms" in result.output


def test_the_package_license_is_an_spdx_string_so_setuptools_does_not_warn():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_cli_tables_show_times_in_the_column_s_zone_as_the_desk_does(tmp_path):
    config = make_config(tmp_path)  # column.timezone = America/New_York
    db = open_database(config.storage.database)
    subs.add_confirmed(db, "dana@example.org", clock=lambda: dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone.utc))
    db.close()
    listed = run(tmp_path, config, "subscribers", "list")
    assert "2026-11-23 04:00 EST" in listed.output and "09:00" not in listed.output
