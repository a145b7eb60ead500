"""`mailer status`: what an operator sees, read from a real service, archive and schedule files.

The service runs on loopback with the relay refusing acknowledgements (so
the outbox has failures to show), a digest goes out through the real CLI,
and `status --json` and the human output are read like an operator would.
Counting "today" and "this week" is checked with a fixed time, in the
column's timezone, with the week starting on Monday. Status only reads: no
archive, or one waiting for a migration, is an error that creates and
migrates nothing, and an archive a crash left is read, not recovered.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest
import sqlite_utils
from click.testing import CliRunner

from mailer.store import migrations
from mailer.newsletter import subscribers
from mailer import topics
from mailer.store.archive import Envelope, store_inbound, store_outbound
from mailer.cli import main
from mailer.clock import iso, parse_iso
from mailer.store.db import open_database
from mailer.app.background import BackgroundService
from mailer.app.status import gather

from configfile import write_config_file
from conftest import REPO, free_port, letter, make_config, rows, send, wait_for

NEW_YORK = ZoneInfo("America/New_York")


def status(config_file, *args):
    """`mailer --config FILE status ARGS`, as an operator runs it."""
    result = CliRunner().invoke(main, ["--config", str(config_file), "status", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def publish_topic_today(config) -> None:
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    db = open_database(config.storage.database)
    topics.import_topics(db, [topics.Topic(
        slug="status-piece", title="A piece for the status test", url="https://column.example/topics/status-piece",
        summary="Something new this week.", keywords=("change",), published=today,
    )], clock=lambda: dt.datetime.now(dt.timezone.utc))
    subscribers.add_confirmed(db, "subscriber@example.org", clock=lambda: dt.datetime.now(dt.timezone.utc))
    db.close()


def test_status_of_a_running_service_then_of_a_stopped_one(tmp_path, smtp_sink):
    smtp_sink.refuse_with = "550 5.1.1 no such user here"
    config = make_config(
        tmp_path,
        smtp={"port": free_port()},
        web={"enabled": True, "port": free_port()},
        delivery={"mode": "smtp", "relay_port": smtp_sink.port, "timeout": 5.0},
        # No catch-up run at start: the only digest is the one sent below.
        digest={"grace_period_hours": 0.0},
    )
    config.digest.schedules.mkdir(parents=True)
    (config.digest.schedules / "weekly_digest.toml").write_text(
        'job = "digest"\ncron = "0 8 * * mon"\ntimezone = "America/New_York"\n', encoding="utf-8")
    config_file = write_config_file(config, tmp_path / "mailer.toml")
    publish_topic_today(config)

    day = dt.datetime.now(NEW_YORK).date()
    with BackgroundService(config) as running:
        send(running.smtp_port, letter("First"), mail_from="dana@example.org")
        send(running.smtp_port, letter("Second", sender="Sam <sam@example.org>"), mail_from="sam@example.org")
        wait_for(lambda: len(rows(config.storage.database, "SELECT id FROM outbox WHERE status = 'failed'")) == 2,
                 message="both acknowledgements refused by the relay")
        smtp_sink.refuse_with = None
        sent = CliRunner().invoke(main, ["--config", str(config_file), "digest", "send", "--quiet"])
        assert sent.exit_code == 0, sent.output

        data = json.loads(status(config_file, "--json"))
        human = status(config_file)

    assert data["listener"] == {"address": f"127.0.0.1:{config.smtp.port}", "host": "127.0.0.1",
                                "port": config.smtp.port, "answering": True}
    assert data["web"]["enabled"] is True and data["web"]["answering"] is True
    assert data["web"]["address"] == f"127.0.0.1:{config.web.port}"
    assert data["timezone"] == "America/New_York" and data["week_starts"] == "monday"
    if dt.datetime.now(NEW_YORK).date() == day:  # the test did not run across local midnight
        assert data["letters"]["today"] == 2 and data["letters"]["this_week"] == 2
        assert "letters      today 2, this week 2" in human
    assert data["outbox"]["pending"] == 0 and data["outbox"]["failed"] == 2

    last = data["digest"]["last"]
    assert last["status"] == "sent" and last["sent"] == 1 and last["not_sent"] == 0 and last["topics"] == 1
    generated = parse_iso(data["generated_at"])
    upcoming = parse_iso(data["digest"]["next"]["at"])
    local = upcoming.astimezone(NEW_YORK)
    assert data["digest"]["next"]["schedule"] == "weekly_digest"
    assert (local.weekday(), local.hour, local.minute) == (0, 8, 0)
    assert generated < upcoming <= generated + dt.timedelta(days=7)
    assert data["digest"]["schedules"] == [{"name": "weekly_digest", "cron": "0 8 * * mon", "job": "digest",
                                            "timezone": "America/New_York", "next_at": data["digest"]["next"]["at"]}]

    assert data["subscribers"] == {"pending": 0, "confirmed": 1, "unsubscribed": 0, "suspended": 0}
    database = data["database"]
    assert database["path"] == str(config.storage.database)
    assert database["main_bytes"] > 0
    assert database["bytes"] == database["main_bytes"] + database["wal_bytes"]

    assert f"listener     smtp 127.0.0.1:{config.smtp.port}  answering" in human
    assert f"web          http 127.0.0.1:{config.web.port}  answering" in human
    assert "outbox       pending 0, failed 2" in human
    assert "America/New_York" in human and "weeks start Monday" in human
    assert f"last digest  #{last['id']} sent" in human
    assert "next digest  Mon " in human and "08:00 (weekly_digest)" in human
    assert "subscribers  pending 0, confirmed 1, unsubscribed 0, suspended 0" in human

    stopped = json.loads(status(config_file, "--json"))
    assert stopped["listener"]["answering"] is False and stopped["web"]["answering"] is False
    assert stopped["database"]["main_bytes"] == os.path.getsize(config.storage.database)
    assert "NOT ANSWERING" in status(config_file)


# Stored at these moments (UTC). In New York: Sunday 22:00, Monday 00:30,
# Monday 21:00 and Tuesday 09:00 of the week starting Monday 30 November.
STORED_AT = [
    dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.timezone.utc),
    dt.datetime(2026, 11, 30, 5, 30, tzinfo=dt.timezone.utc),
    dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.timezone.utc),
    dt.datetime(2026, 12, 1, 14, 0, tzinfo=dt.timezone.utc),
]
NOW = dt.datetime(2026, 12, 1, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday noon in New York


@pytest.mark.parametrize("zone, today, week, midnight", [
    ("America/New_York", 1, 3, dt.datetime(2026, 12, 1, 5, 0, tzinfo=dt.timezone.utc)),
    ("UTC", 2, 4, dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.timezone.utc)),
], ids=["new-york-counts-its-own-day-and-week", "utc-counts-the-sunday-evening-letter-too"])
def test_letters_today_and_this_week_are_counted_in_the_columns_timezone(tmp_path, zone, today, week, midnight):
    config = make_config(tmp_path, column={"timezone": zone})
    db = open_database(config.storage.database)
    # Three weeks of older letters, with acknowledgements and a subscription
    # request between them: none of them counts.
    for day in range(21, 1, -1):
        moment = NOW - dt.timedelta(days=day)
        store_inbound(db, letter(f"Old {day}"), Envelope("old@example.org", ("letters@column.example",)),
                      kind="letter", clock=lambda m=moment: m)
        store_outbound(db, letter(f"Re: Old {day}"), kind="acknowledgement", mail_from="",
                       rcpt_to=["old@example.org"], clock=lambda m=moment: m)
    for moment in STORED_AT:
        store_inbound(db, letter(f"Letter at {moment}"), Envelope("dana@example.org", ("letters@column.example",)),
                      kind="letter", clock=lambda m=moment: m)
        store_outbound(db, letter("Re: a letter"), kind="acknowledgement", mail_from="",
                       rcpt_to=["dana@example.org"], clock=lambda m=moment: m)
    store_inbound(db, letter("subscribe"), Envelope("new@example.org", ("subscribe@column.example",)),
                  kind="subscribe", clock=lambda: NOW)

    data = gather(config, db, clock=lambda: NOW, timeout=0.1)
    wal = config.storage.database.with_name("mailer.db-wal").stat().st_size
    db.close()

    assert data["letters"] == {
        "today": today, "this_week": week, "today_since": iso(midnight),
        "week_since": iso(midnight - dt.timedelta(days=1)),  # Tuesday's Monday
    }
    assert data["timezone"] == zone
    assert data["generated_at"] == iso(NOW)
    # The size counts the write-ahead log (not checkpointed yet: the connection is open).
    assert data["database"]["wal_bytes"] == wal > 0
    assert data["database"]["bytes"] == data["database"]["main_bytes"] + wal


def test_a_broken_schedule_file_is_shown_not_fatal(tmp_path):
    config = make_config(tmp_path)
    open_database(config.storage.database).close()
    config.digest.schedules.mkdir(parents=True)
    (config.digest.schedules / "weekly_digest.toml").write_text('cron = "every monday"\n', encoding="utf-8")
    config_file = write_config_file(config, tmp_path / "mailer.toml")

    data = json.loads(status(config_file, "--json"))
    assert data["digest"]["next"] is None
    assert "weekly_digest.toml" in data["digest"]["error"] and "cron" in data["digest"]["error"]
    assert "next digest  schedule error:" in status(config_file)


@pytest.mark.parametrize("how", ["config-naming-a-missing-file", "no-config-from-the-wrong-folder"])
def test_status_without_a_database_says_so_and_creates_nothing(tmp_path, monkeypatch, how):
    if how == "config-naming-a-missing-file":
        config = make_config(tmp_path, storage={"database": "var/mailer.db"})
        args, named = ["--config", str(write_config_file(config, tmp_path / "mailer.toml"))], "from "
    else:  # the defaults: var/mailer.db under the current folder
        monkeypatch.chdir(tmp_path)
        args, named = [], "the default under the current folder"
    before = sorted(tmp_path.iterdir())

    result = CliRunner().invoke(main, [*args, "status"], env={"MAILER_CONFIG": None})

    assert result.exit_code == 1
    assert f"there is no database at {tmp_path / 'var' / 'mailer.db'}" in result.output
    assert "(storage.database, " + named in result.output and "nothing was created" in result.output
    assert "Traceback" not in result.output
    assert sorted(tmp_path.iterdir()) == before  # no var/, no mailer.db


def archive_before_the_last_migration(path) -> int:
    """An archive as the previous release left it: every migration but the newest applied."""
    *older, (newest, _, _) = migrations.MIGRATIONS
    db = sqlite_utils.Database(str(path))
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    for version, name, apply in older:
        with db.atomic():
            apply(db)
            db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, "2026-01-01T00:00:00+00:00"])
    db.close()
    return newest


def test_status_on_an_archive_older_than_the_program_says_so_and_migrates_nothing(tmp_path):
    config = make_config(tmp_path)
    config_file = write_config_file(config, tmp_path / "mailer.toml")
    newest = archive_before_the_last_migration(config.storage.database)
    before = config.storage.database.read_bytes()

    result = CliRunner().invoke(main, ["--config", str(config_file), "status"])

    assert result.exit_code == 1
    assert f"the database {config.storage.database} is older than this program" in result.output
    assert f"migration {newest} pending" in result.output and "`mailer serve` migrates it" in result.output
    assert config.storage.database.read_bytes() == before
    assert newest not in [r["version"] for r in rows(config.storage.database, "SELECT version FROM schema_migrations")]


# A writer that dies without closing the archive, as `mailer serve` does on
# kill -9: what it committed is in the write-ahead log, not yet in the file.
CRASHING_WRITER = """
import datetime as dt, os, signal, sys
from mailer.newsletter import subscribers
from mailer.store.db import open_database
db = open_database(sys.argv[1])
for n in range(3):
    subscribers.add_confirmed(db, f"reader{n}@example.org", clock=lambda: dt.datetime.now(dt.timezone.utc))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_status_after_a_crash_reads_the_write_ahead_log_and_leaves_recovery_to_serve(tmp_path):
    config = make_config(tmp_path)
    config_file = write_config_file(config, tmp_path / "mailer.toml")
    open_database(config.storage.database).close()
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(config.storage.database)],
                             cwd=REPO, capture_output=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    wal = config.storage.database.with_name("mailer.db-wal")
    main_before, wal_before = config.storage.database.read_bytes(), wal.read_bytes()
    assert wal_before

    data = json.loads(status(config_file, "--json"))

    assert data["subscribers"]["confirmed"] == 3  # committed, and only in the log
    assert data["database"]["wal_bytes"] == len(wal_before)
    # Status neither checkpointed the log into the file nor removed it.
    assert config.storage.database.read_bytes() == main_before and wal.read_bytes() == wal_before

    with BackgroundService(config):
        pass  # serve opens the archive, recovers the log, and checkpoints it when it stops
    assert not wal.exists()
    assert json.loads(status(config_file, "--json"))["subscribers"]["confirmed"] == 3


def test_status_of_a_migrated_empty_archive_has_nothing_to_count(tmp_path):
    config = make_config(tmp_path, smtp={"port": free_port()})
    config_file = write_config_file(config, tmp_path / "mailer.toml")
    open_database(config.storage.database).close()  # what `mailer serve` leaves on its first start

    data = json.loads(status(config_file, "--json"))
    assert data["letters"]["today"] == 0 and data["letters"]["this_week"] == 0
    assert data["outbox"] == {"pending": 0, "failed": 0, "next_attempt_at": None}
    assert data["digest"] == {"last": None, "next": None, "schedules": [], "error": None}
    assert data["web"] == {"enabled": False, "address": f"127.0.0.1:{config.web.port}", "host": "127.0.0.1",
                           "port": config.web.port, "answering": None}
    human = status(config_file)
    assert "web          disabled" in human and "last digest  none yet" in human
    assert "next digest  not scheduled" in human


def test_status_has_help_text():
    result = CliRunner().invoke(main, ["status", "--help"])
    assert result.exit_code == 0
    assert "this week" in result.output and "Monday" in result.output and "--json" in result.output


def test_status_shows_letters_received_and_not_filed_yet(tmp_path):
    # No service runs, so nothing files them: two letters kept as the listener
    # keeps them before its 250, the older five minutes before "now".
    from mailer.store.arrivals import receive

    config = make_config(tmp_path, smtp={"port": free_port()})
    config_file = write_config_file(config, tmp_path / "mailer.toml")
    db = open_database(config.storage.database)
    now = dt.datetime.now(dt.timezone.utc)
    with db.atomic():
        receive(db, letter("First", message_id="<w1@example.org>"), Envelope("a@example.org", ("letters@column.example",)),
                kind="letter", clock=lambda: now - dt.timedelta(minutes=5))
        receive(db, letter("Second", message_id="<w2@example.org>"), Envelope("b@example.org", ("letters@column.example",)),
                kind="letter", clock=lambda: now)
    db.close()

    data = json.loads(status(config_file, "--json"))
    assert data["filing"]["count"] == 2
    assert 300 <= data["filing"]["oldest_age_seconds"] < 400
    human = status(config_file)
    assert "2 letter(s) received, waiting to be filed; the oldest for 3" in human

    with BackgroundService(config):  # the pipeline files them
        wait_for(lambda: not rows(config.storage.database, "SELECT id FROM arrivals"), message="filing")
    data = json.loads(status(config_file, "--json"))
    assert data["filing"] == {"count": 0, "oldest_age_seconds": None}
    assert "every letter received is filed" in status(config_file)
