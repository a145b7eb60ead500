"""The weekly digest: subscribe, confirm, receive it once, leave with one click.

Every test runs against real things: the service on loopback, an aiosmtpd
sink as the relay, the web pages over HTTP with httpx, and the SQLite file.
Time is passed in (a fixed or stepping clock), never slept on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
from email import policy
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from mailer.newsletter import digest as digests
from mailer.newsletter import sending
from mailer import topics
from mailer.cli import main
from mailer.store.db import open_database
from mailer.app.background import BackgroundService
from mailer.newsletter.scheduler import Schedule, crontab_weekdays, due_fire_time, load_schedules, next_fire_times
from mailer.newsletter.subscribers import token_key

from conftest import REPO, SmtpSink, SteppingClock, free_port, letter, make_config, rows, send, wait_for

MONDAY_8AM_NEW_YORK = dt.datetime(2026, 11, 30, 13, 0, tzinfo=dt.timezone.utc)


# -- helpers ---------------------------------------------------------------------------

def add_topics(config, *published: str, prefix: str = "piece") -> list[str]:
    """Publish one topic per date; returns their slugs."""
    made = [
        topics.Topic(slug=f"{prefix}-{day}", title=f"A piece from {day}", url=f"https://column.example/topics/{prefix}-{day}",
                     summary=f"What changed on {day}, and how to enjoy it.", keywords=("change",), published=day)
        for day in published
    ]
    db = open_database(config.storage.database)
    topics.import_topics(db, made, clock=lambda: dt.datetime.now(dt.timezone.utc))
    db.close()
    return [t.slug for t in made]


def add_subscribers(config, n: int, *, start: int = 0) -> list[str]:
    """``n`` confirmed subscribers, straight into the database."""
    addresses = [f"reader{i:05d}@example.org" for i in range(start, start + n)]
    db = open_database(config.storage.database)
    with db.atomic():
        db.conn.executemany(
            "INSERT INTO subscribers (email, status, source, created_at, updated_at, confirmed_at) "
            "VALUES (?, 'confirmed', 'test', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', "
            "'2026-01-01T00:00:00+00:00')", [(a,) for a in addresses],
        )
    db.close()
    return addresses


def smtp_config(tmp_path, sink, *, web: bool = False, **sections):
    """A config whose relay is the sink (and, with ``web``, whose pages are served)."""
    delivery = {"mode": "smtp", "relay_port": sink.port, "timeout": 5.0}
    delivery.update(sections.pop("delivery", {}))
    if web:
        port = free_port()
        sections["web"] = {"enabled": True, "port": port, "public_url": f"http://127.0.0.1:{port}"}
    return make_config(tmp_path, delivery=delivery, **sections)


def write_config_file(tmp_path: Path, config) -> Path:
    """The same settings as a TOML file, for the command line and subprocesses."""
    path = tmp_path / "mailer.toml"
    path.write_text(
        f'[storage]\ndatabase = "{config.storage.database}"\n'
        f'[delivery]\nmode = "{config.delivery.mode}"\nrelay_port = {config.delivery.relay_port}\n'
        f'maildir = "{config.delivery.maildir}"\ntimeout = 5.0\nretry_base_seconds = 0.05\n'
        f'[digest]\nschedules = "{config.digest.schedules}"\nconcurrency = {config.digest.concurrency}\n'
        f'[subscribers]\ntoken_key_file = "{config.subscribers.token_key_file}"\n'
        f'[web]\npublic_url = "{config.web.public_url}"\n'
    )
    return path


def send_now(config, clock, **kwargs) -> sending.Summary:
    """What `mailer digest send` does, in-process."""
    return asyncio.run(sending.run_digest(config, clock=clock, key=token_key(config), **kwargs))


def parsed(message: dict) -> email.message.EmailMessage:
    return email.message_from_bytes(message["data"], policy=policy.default)


def digests_at(sink) -> list[dict]:
    return [m for m in sink.messages if b"List-Unsubscribe-Post" in m["data"]]


def copies_by_recipient(sink) -> dict[str, int]:
    found: dict[str, int] = {}
    for message in digests_at(sink):
        for rcpt in message["rcpt_tos"]:
            found[rcpt] = found.get(rcpt, 0) + 1
    return found


# -- the main story ------------------------------------------------------------------------

def test_subscribe_confirm_receive_one_click_unsubscribe_then_no_more_digests(tmp_path, smtp_sink):
    clock = SteppingClock(MONDAY_8AM_NEW_YORK - dt.timedelta(days=1))
    config = smtp_config(tmp_path, smtp_sink, web=True)
    add_topics(config, "2026-11-25", "2026-11-27")
    with BackgroundService(config, clock=clock) as running:
        # 1. A reader asks by mail; exactly one confirmation arrives at the relay.
        code, _ = send(running.smtp_port, letter("subscribe", "please", sender="Dana <dana@example.org>",
                                                 to="subscribe@column.example", message_id="<sub1@example.org>"),
                       mail_from="dana@example.org", rcpt_to=("subscribe@column.example",))
        assert code == 250
        confirmation = parsed(wait_for(lambda: smtp_sink.messages, message="confirmation at the relay")[0])
        assert confirmation["To"].addresses[0].addr_spec == "dana@example.org"
        assert confirmation["Reply-To"].addresses[0].addr_spec == "subscribe@column.example"
        assert confirmation["In-Reply-To"] == "<sub1@example.org>"
        link = re.search(r"http://\S+/subscribe/confirm/\S+", confirmation.get_body(("plain",)).get_content()).group()
        assert rows(config.storage.database, "SELECT status FROM subscribers")[0]["status"] == "pending"

        # 2. Following the link shows a page (a GET confirms nothing); the button confirms.
        page = httpx.get(link)
        assert page.status_code == 200 and "Yes, subscribe me" in page.text
        assert rows(config.storage.database, "SELECT status FROM subscribers")[0]["status"] == "pending"
        done = httpx.post(link)
        assert done.status_code == 200 and "You are subscribed" in done.text
        assert rows(config.storage.database, "SELECT status FROM subscribers")[0]["status"] == "confirmed"

        # 3. The digest arrives at the relay with the list headers, from the bounces address.
        clock.advance(days=1)
        summary = send_now(config, clock)
        assert (summary.sent, summary.failed) == (1, 0) and summary.finished
        got = digests_at(smtp_sink)
        assert len(got) == 1 and got[0]["rcpt_tos"] == ["dana@example.org"]
        # Each copy goes out from its own VERP address, which names no address.
        assert re.fullmatch(r"bounces\+[a-z2-7]{29}@column.example", got[0]["mail_from"])
        assert "dana" not in got[0]["mail_from"]
        digest = parsed(got[0])
        assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert digest["Auto-Submitted"] == "auto-generated" and digest["Precedence"] == "bulk"
        assert digest["List-Id"] == "Enjoy Your Changes digest <digest.column.example>"
        assert digest["Message-ID"].endswith("@column.example>") and digest["Date"]
        urls = re.findall(r"<([^>]+)>", digest["List-Unsubscribe"])
        https_url, mailto = urls
        assert https_url.startswith(config.web.public_url + "/unsubscribe/")
        assert mailto.startswith("mailto:unsubscribe@column.example?subject=unsubscribe%20")
        text = digest.get_body(("plain",)).get_content()
        assert text.splitlines()[0] == "Enjoy Your Changes"  # the masthead
        assert "A piece from 2026-11-25" in text and "https://column.example/topics/piece-2026-11-27" in text
        assert https_url in text and text.rstrip().splitlines()[-1].startswith("(or write to")
        assert "reads every letter" in text.split("--")[0]
        html = digest.get_body(("html",)).get_content()
        assert f'href="{https_url}"' in html

        # 4. A link scanner's GET changes nothing; the provider's one-click POST unsubscribes.
        assert httpx.get(https_url).status_code == 200
        assert rows(config.storage.database, "SELECT status FROM subscribers")[0]["status"] == "confirmed"
        one_click = httpx.post(https_url, content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert one_click.status_code == 200 and "You are unsubscribed" in one_click.text
        assert rows(config.storage.database, "SELECT status FROM subscribers")[0]["status"] == "unsubscribed"

        # 5. Next week's digest goes to nobody.
        add_topics(config, "2026-12-03")
        clock.advance(days=7)
        summary = send_now(config, clock)
        assert summary.sent == 0
    assert len(digests_at(smtp_sink)) == 1


def test_the_archived_copy_is_byte_for_byte_what_the_relay_got(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_topics(config, "2026-11-28")
    add_subscribers(config, 3)
    clock = SteppingClock(MONDAY_8AM_NEW_YORK)
    summary = send_now(config, clock)
    assert summary.sent == 3
    db = open_database(config.storage.database)
    archived = {r["correspondent"]: (r["id"], r["thread_id"]) for r in db.query(
        "SELECT id, thread_id, correspondent FROM messages WHERE kind = 'digest' AND direction = 'outbound'")}
    assert len(archived) == 3
    for message in smtp_sink.messages:
        message_id, thread_id = archived[message["rcpt_tos"][0]]
        assert digests.archived_bytes(db, message_id, token_key(config)) == message["data"]
        owner = db.execute("SELECT thread_id FROM subscribers WHERE email = ?", [message["rcpt_tos"][0]]).fetchone()[0]
        assert owner == thread_id, "each copy sits in its subscriber's thread"
    # The frame is kept once per digest, not once per copy.
    assert db.execute("SELECT count(*) FROM raw_messages r JOIN messages m ON m.id = r.id "
                      "WHERE m.kind = 'digest'").fetchone()[0] == 0
    db.close()
    result = CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)), "digest", "raw",
                                       str(archived["reader00001@example.org"][0])])
    assert result.exit_code == 0
    assert result.stdout_bytes == next(m["data"] for m in smtp_sink.messages
                                       if m["rcpt_tos"] == ["reader00001@example.org"])


def test_no_subscriber_can_name_another_subscribers_copy(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_topics(config, "2026-11-28")
    add_subscribers(config, 2)
    assert send_now(config, SteppingClock(MONDAY_8AM_NEW_YORK)).sent == 2
    db = open_database(config.storage.database)
    ids = {r["email"]: r["id"] for r in db.query("SELECT id, email FROM subscribers")}
    db.close()
    mine, theirs = (parsed(next(m for m in smtp_sink.messages if m["rcpt_tos"] == [a]))["Message-ID"]
                    for a in ("reader00000@example.org", "reader00001@example.org"))
    # What reader 0 can work out from their own copy: swap in the other's subscriber id.
    local, domain = mine.strip("<>").split("@")
    parts = local.split(".")  # digest.<digest id>.<subscriber id>...
    assert parts[2] == str(ids["reader00000@example.org"])
    parts[2] = str(ids["reader00001@example.org"])
    guessed = f"<{'.'.join(parts)}@{domain}>"
    assert guessed != theirs


# -- what is new ------------------------------------------------------------------------------

def test_only_topics_published_after_the_previous_digest_appear(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_subscribers(config, 1)
    add_topics(config, "2026-11-25", "2026-11-28", prefix="old")
    clock = SteppingClock(MONDAY_8AM_NEW_YORK)
    assert send_now(config, clock).sent == 1
    add_topics(config, "2026-12-02", "2026-12-05", prefix="new")
    clock.advance(days=7)
    assert send_now(config, clock).sent == 1
    second = parsed(digests_at(smtp_sink)[1]).get_body(("plain",)).get_content()
    assert "new-2026-12-02" in second and "new-2026-12-05" in second
    assert "old-" not in second


def test_a_piece_published_on_digest_day_after_the_digest_is_in_the_next_one(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_subscribers(config, 1)
    add_topics(config, "2026-11-30", prefix="morning")  # Monday, before the 08:00 digest
    clock = SteppingClock(MONDAY_8AM_NEW_YORK)
    assert send_now(config, clock).sent == 1
    add_topics(config, "2026-11-30", prefix="afternoon")  # the same Monday, after it went out
    clock.advance(days=7)
    assert send_now(config, clock).sent == 1
    first, second = (parsed(m).get_body(("plain",)).get_content() for m in digests_at(smtp_sink))
    assert "morning-2026-11-30" in first and "afternoon" not in first
    assert "afternoon-2026-11-30" in second and "morning" not in second


def test_no_new_topics_means_no_digest_and_the_log_says_so(tmp_path, smtp_sink, caplog):
    config = smtp_config(tmp_path, smtp_sink)
    add_subscribers(config, 2)
    add_topics(config, "2026-10-01")  # long before the first digest's week
    with caplog.at_level(logging.INFO, logger="mailer.digest"):
        summary = send_now(config, SteppingClock(MONDAY_8AM_NEW_YORK))
    assert summary.digest_id is None and summary.sent == 0
    assert "no topics published since" in caplog.text
    assert smtp_sink.messages == []
    result = CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)), "digest", "preview"])
    assert result.exit_code == 0 and "(the newest is from 2026-10-01)" in result.output
    assert "--since 2026-10-01" in result.output


def test_preview_renders_the_next_digest_without_recording_anything(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_topics(config, dt.date.today().isoformat())
    html_file = tmp_path / "preview.html"
    result = CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)),
                                       "digest", "preview", "--html", str(html_file)])
    assert result.exit_code == 0, result.output
    assert "Subject: Enjoy Your Changes! 1 new piece this week" in result.output
    assert "The week's new pieces" in result.output
    assert "<h1" in html_file.read_text() and "Unsubscribe with one click" in html_file.read_text()
    assert rows(config.storage.database, "SELECT count(*) AS n FROM digests")[0]["n"] == 0


def test_digest_send_command_shows_a_summary(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_topics(config, dt.date.today().isoformat())
    add_subscribers(config, 5)
    result = CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)), "digest", "send"])
    assert result.exit_code == 0, result.output
    assert "sent 5, failed 0, skipped 0" in result.output
    assert len(digests_at(smtp_sink)) == 5
    again = CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)), "digest", "send"])
    assert "no topics published since" in again.output and len(digests_at(smtp_sink)) == 5
    listed = CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)), "digest", "list"])
    assert "sent" in listed.output and "manual:" in listed.output


# -- delivery trouble -----------------------------------------------------------------------------

class RefusingSink(SmtpSink):
    """Refuses some recipients: 550 for one, 451 (once) for another."""

    def __init__(self, permanent: set[str], temporary_once: set[str]) -> None:
        super().__init__()
        self.permanent, self.temporary_once = permanent, set(temporary_once)

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.permanent:
            return "550 5.1.1 no such user"
        if address in self.temporary_once:
            self.temporary_once.discard(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_refused_copies_are_failed_or_deferred_and_a_later_run_finishes(tmp_path):
    addresses = None
    sink = RefusingSink({"reader00001@example.org"}, {"reader00002@example.org", "reader00003@example.org"})
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), decode_data=False)
    controller.start()
    try:
        sink.port = controller.port
        config = smtp_config(tmp_path, sink, digest={"retry_passes": 0})
        add_topics(config, "2026-11-28")
        addresses = add_subscribers(config, 5)
        clock = SteppingClock(MONDAY_8AM_NEW_YORK)
        first = send_now(config, clock)
        assert (first.sent, first.failed, first.deferred) == (2, 1, 2) and not first.finished
        assert "550 5.1.1" in first.failures[0]
        second = send_now(config, clock)  # resumes the unfinished digest
        assert (second.sent, second.failed, second.skipped) == (2, 0, 3) and second.finished
    finally:
        controller.stop()
    assert sorted(copies_by_recipient(sink)) == sorted(set(addresses) - {"reader00001@example.org"})
    assert all(n == 1 for n in copies_by_recipient(sink).values())


def add_accented_topic(config) -> None:
    """A piece whose title and summary make the digest 8-bit text."""
    db = open_database(config.storage.database)
    topics.import_topics(db, [topics.Topic(
        slug="cafe-mere", title="Café, ma mère et moi", url="https://column.example/topics/cafe-mere",
        summary="Trois années de disputes sur la même chose.", keywords=("famille",), published="2026-11-28",
    )], clock=lambda: dt.datetime.now(dt.timezone.utc))
    db.close()


def test_an_8bit_digest_says_body_8bitmime_to_the_relay(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    add_accented_topic(config)
    add_subscribers(config, 2)
    assert send_now(config, SteppingClock(MONDAY_8AM_NEW_YORK)).sent == 2
    for message in digests_at(smtp_sink):
        assert "Café, ma mère et moi".encode() in message["data"]
        assert [o for o in message["mail_options"] if o.startswith("BODY=")] == ["BODY=8BITMIME"]


def test_a_relay_without_8bitmime_gets_no_8bit_digest_the_copies_wait(tmp_path):
    sink = SmtpSink()
    # With decode_data=True aiosmtpd does not offer 8BITMIME, like an old relay.
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), decode_data=True)
    controller.start()
    try:
        sink.port = controller.port
        config = smtp_config(tmp_path, sink, digest={"retry_passes": 0})
        add_accented_topic(config)
        add_subscribers(config, 2)
        summary = send_now(config, SteppingClock(MONDAY_8AM_NEW_YORK))
    finally:
        controller.stop()
    assert (summary.sent, summary.failed, summary.deferred) == (0, 0, 2) and not summary.finished
    assert sink.messages == []
    answers = rows(config.storage.database, "SELECT status, response FROM digest_sends")
    assert [a["status"] for a in answers] == ["deferred", "deferred"]
    assert all("does not offer 8BITMIME" in a["response"] for a in answers)


class UnsubscribingSink(SmtpSink):
    """While one recipient's message is on its way, that reader unsubscribes on the web."""

    def __init__(self, db_path: Path, address: str) -> None:
        super().__init__()
        self.db_path, self.address = db_path, address

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address == self.address:
            conn = sqlite3.connect(self.db_path, timeout=10)
            with conn:
                conn.execute("UPDATE subscribers SET status = 'unsubscribed' WHERE email = ?", [address])
            conn.close()
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_someone_who_unsubscribes_during_a_run_gets_nothing(tmp_path):
    config = make_config(tmp_path)
    sink = UnsubscribingSink(config.storage.database, "reader00002@example.org")
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), decode_data=False)
    controller.start()
    try:
        sink.port = controller.port
        config = smtp_config(tmp_path, sink)
        add_topics(config, "2026-11-28")
        add_subscribers(config, 4)
        summary = send_now(config, SteppingClock(MONDAY_8AM_NEW_YORK))
    finally:
        controller.stop()
    assert (summary.sent, summary.skipped) == (3, 1)
    assert "reader00002@example.org" not in copies_by_recipient(sink)


def test_in_maildir_mode_a_restart_asks_the_maildir_what_arrived(tmp_path):
    config = make_config(tmp_path)  # delivery.mode = "maildir"
    add_topics(config, "2026-11-28")
    add_subscribers(config, 3)
    clock = SteppingClock(MONDAY_8AM_NEW_YORK)
    assert send_now(config, clock).sent == 3
    files = sorted((Path(config.delivery.maildir) / "new").iterdir())
    assert [f.name.split(".")[:3] for f in files] == [["digest", "1", str(i)] for i in (1, 2, 3)]
    # As if killed between logging copy 2 and writing its file:
    files[1].unlink()
    db = open_database(config.storage.database)
    with db.atomic():
        db.execute("UPDATE digests SET status = 'sending'")
        db.execute("UPDATE digest_sends SET status = 'sending' WHERE subscriber_id IN (2, 3)")
    db.close()
    again = send_now(config, clock)
    assert (again.sent, again.skipped, again.uncertain) == (1, 2, 0) and again.finished
    assert len(list((Path(config.delivery.maildir) / "new").iterdir())) == 3


# -- exactly one copy each, even after kill -9 -------------------------------------------------------

class StallingSink(SmtpSink):
    """Keeps every message, but after ``stall_after`` stops answering: the sender is left
    waiting for the 250 of messages the relay already has (the worst moment to be killed)."""

    def __init__(self, stall_after: int | None) -> None:
        super().__init__()
        self.stall_after = stall_after
        self.release = asyncio.Event()

    async def handle_DATA(self, server, session, envelope):
        answer = await super().handle_DATA(server, session, envelope)
        if self.stall_after is not None and len(self.messages) >= self.stall_after:
            await self.release.wait()
        return answer


def _digest_send_process(config_file: Path, *, capture: bool = True) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "mailer", "--config", str(config_file), "digest", "send", "--quiet"],
                            cwd=REPO, env=env, stdout=output, stderr=output)


@pytest.mark.slow
@pytest.mark.parametrize("stall", [True, False], ids=["killed-while-the-relay-holds-unanswered-messages",
                                                      "killed-mid-stream"])
def test_a_run_killed_with_sigkill_and_restarted_sends_exactly_one_copy_each(tmp_path, stall):
    n = 400
    sink = StallingSink(stall_after=150 if stall else None)
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), decode_data=False)
    controller.start()
    try:
        sink.port = controller.port
        config = smtp_config(tmp_path, sink, digest={"concurrency": 4})
        add_topics(config, dt.date.today().isoformat())
        addresses = add_subscribers(config, n)
        config_file = write_config_file(tmp_path, config)

        process = _digest_send_process(config_file, capture=False)
        wait_for(lambda: len(sink.messages) >= 150 or process.poll() is not None, timeout=60,
                 message="the sink to receive some digests")
        if stall:  # every connection is now waiting for an answer to a message the sink holds
            wait_for(lambda: len(sink.messages) >= 150 + 3, timeout=10, message="all connections stalled")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL, "the run must be killed halfway, not finish"
        got_before = len(sink.messages)
        assert got_before < n
        controller.loop.call_soon_threadsafe(sink.release.set)

        restarted = _digest_send_process(config_file)
        out, err = restarted.communicate(timeout=120)
        assert restarted.returncode == 0, err.decode()
    finally:
        controller.stop()
    counts = copies_by_recipient(sink)
    duplicates = {a: c for a, c in counts.items() if c > 1}
    assert duplicates == {}, f"second copies: {duplicates}"
    missing = set(addresses) - set(counts)
    if stall:
        assert missing == set(), f"never got it: {sorted(missing)[:5]}"
    else:
        # A kill in the microseconds between logging a copy and sending its final dot
        # leaves it 'sending' without the relay having it: reported, never guessed at.
        uncertain = {r["email"] for r in rows(config.storage.database,
                     "SELECT s.email FROM digest_sends d JOIN subscribers s ON s.id = d.subscriber_id "
                     "WHERE d.status = 'sending'")}
        assert missing <= uncertain, f"missing and not reported uncertain: {sorted(missing - uncertain)[:5]}"
        assert len(missing) <= config.digest.concurrency
    assert b"sent " in out
    # Every copy the relay took (or may have taken) is in the archive, exactly once.
    archived = rows(config.storage.database,
                    "SELECT correspondent, count(*) AS n FROM messages WHERE kind = 'digest' GROUP BY correspondent")
    assert len(archived) == n and all(r["n"] == 1 for r in archived)


# -- the schedule --------------------------------------------------------------------------------------

WEEKLY = Schedule(name="weekly_digest", cron="0 8 * * mon", timezone="America/New_York")
UTC = dt.timezone.utc

DST_CASES = {
    # name: (now, expected next two fire times in UTC)
    "spring-forward-est-to-edt": (dt.datetime(2026, 3, 4, 12, 0, tzinfo=UTC),
                                  [dt.datetime(2026, 3, 9, 12, 0, tzinfo=UTC), dt.datetime(2026, 3, 16, 12, 0, tzinfo=UTC)]),
    "before-spring-forward": (dt.datetime(2026, 2, 25, 12, 0, tzinfo=UTC),
                              [dt.datetime(2026, 3, 2, 13, 0, tzinfo=UTC), dt.datetime(2026, 3, 9, 12, 0, tzinfo=UTC)]),
    "fall-back-edt-to-est": (dt.datetime(2026, 10, 28, 12, 0, tzinfo=UTC),
                             [dt.datetime(2026, 11, 2, 13, 0, tzinfo=UTC), dt.datetime(2026, 11, 9, 13, 0, tzinfo=UTC)]),
    "before-fall-back": (dt.datetime(2026, 10, 21, 12, 0, tzinfo=UTC),
                         [dt.datetime(2026, 10, 26, 12, 0, tzinfo=UTC), dt.datetime(2026, 11, 2, 13, 0, tzinfo=UTC)]),
}


@pytest.mark.parametrize("case", list(DST_CASES), ids=list(DST_CASES))
def test_the_weekly_schedule_fires_at_8am_new_york_time_across_daylight_saving(case):
    now, expected = DST_CASES[case]
    fires = next_fire_times(WEEKLY, now, count=2)
    assert fires == expected
    assert all(f.hour == 8 and f.minute == 0 and f.strftime("%a") == "Mon" for f in fires), "local time stays 08:00"


def test_a_missed_fire_is_due_within_the_grace_period_only():
    grace = dt.timedelta(hours=72)
    monday = dt.datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    assert due_fire_time(WEEKLY, monday + dt.timedelta(hours=5), grace) == monday
    assert due_fire_time(WEEKLY, monday + dt.timedelta(hours=73), grace) is None
    assert due_fire_time(WEEKLY, monday - dt.timedelta(minutes=1), grace) is None, "last week's is too old"
    assert due_fire_time(WEEKLY, monday - dt.timedelta(minutes=1), dt.timedelta(days=8)) == monday - dt.timedelta(days=7)


WEEKDAYS = {"monday-is-1": ("1", "mon"), "sunday-is-0": ("0", "sun"), "sunday-is-7": ("7", "sun"),
            "weekdays": ("1-5", "mon,tue,wed,thu,fri"), "names-unchanged": ("mon,fri", "mon,fri")}


@pytest.mark.parametrize("case", list(WEEKDAYS), ids=list(WEEKDAYS))
def test_crontab_weekday_numbers_mean_what_cron_means(case):
    given, expected = WEEKDAYS[case]
    assert crontab_weekdays(given) == expected


def test_the_shipped_schedule_is_monday_8am_in_the_columnists_timezone():
    (schedule,) = [s for s in load_schedules(REPO / "schedules", default_timezone="Europe/Paris") if s.job == "digest"]
    assert (schedule.name, schedule.cron, schedule.timezone) == ("weekly_digest", "0 8 * * mon", "Europe/Paris")


def test_a_digest_missed_while_down_is_sent_once_on_restart_and_never_twice(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink)
    Path(config.digest.schedules).mkdir()
    (Path(config.digest.schedules) / "weekly_digest.toml").write_text('cron = "0 8 * * mon"\n')
    add_topics(config, "2026-11-26")
    add_subscribers(config, 3)
    clock = SteppingClock(MONDAY_8AM_NEW_YORK + dt.timedelta(hours=30))  # down since Monday morning
    with BackgroundService(config, clock=clock) as running:
        wait_for(lambda: running.service.scheduler.runs, message="the catch-up run")
        assert running.service.scheduler.runs[-1].sent == 3
    clock.advance(hours=2)
    with BackgroundService(config, clock=clock) as running:  # restarted the same week: nothing again
        wait_for(lambda: running.service.scheduler.runs, message="the catch-up check")
        assert running.service.scheduler.runs[-1].digest_id is None
    assert len(digests_at(smtp_sink)) == 3
    periods = [r["period"] for r in rows(config.storage.database, "SELECT period FROM digests")]
    assert periods == ["weekly_digest@2026-11-30T13:00:00+00:00"]


def test_a_digest_missed_beyond_the_grace_period_is_not_sent(tmp_path, smtp_sink):
    config = smtp_config(tmp_path, smtp_sink, digest={"grace_period_hours": 12})
    Path(config.digest.schedules).mkdir()
    (Path(config.digest.schedules) / "weekly_digest.toml").write_text('cron = "0 8 * * mon"\n')
    add_topics(config, "2026-11-26")
    add_subscribers(config, 1)
    clock = SteppingClock(MONDAY_8AM_NEW_YORK + dt.timedelta(hours=13))
    with BackgroundService(config, clock=clock) as running:
        assert running.service.scheduler.schedules
    assert rows(config.storage.database, "SELECT count(*) AS n FROM digests")[0]["n"] == 0
    assert smtp_sink.messages == []
