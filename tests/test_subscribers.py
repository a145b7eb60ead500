"""Subscribers: double opt-in by link or reply, no spam, unsubscribe by mail, import, bounces.

Mail goes in over real SMTP to a running service and comes out in a real
Maildir; the web pages are fetched with httpx; rows are read from the file.
"""

from __future__ import annotations

import csv
import datetime as dt
import email
import io
import itertools
import json
import re
from email import policy
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

from mailer.newsletter import bounces
from mailer.newsletter import subscribers as subs
from mailer.cli import main
from mailer.app.background import BackgroundService

from conftest import handled, FIXTURES, free_port, letter, make_config, rows, send, wait_for
from conftest import SteppingClock
from test_digest import write_config_file

START = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone.utc)
_NUMBERS = itertools.count(1)


# -- helpers ----------------------------------------------------------------------------

def web_config(tmp_path, **sections):
    port = free_port()
    return make_config(tmp_path, web={"enabled": True, "port": port, "public_url": f"http://127.0.0.1:{port}"},
                       **sections)


def maildir(config) -> list[email.message.EmailMessage]:
    new = Path(config.delivery.maildir) / "new"
    if not new.exists():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)]


def ask(running, sender="dana@example.org", subject="subscribe", body="please\r\n", message_id="<auto>",
        to="subscribe@column.example", extra_headers="", in_reply_to=None) -> str:
    """Mail the subscribe (or unsubscribe) address; returns the letter's Message-ID."""
    if message_id == "<auto>":
        message_id = f"<ask.{next(_NUMBERS)}@example.org>"
    if in_reply_to:
        extra_headers = (extra_headers + f"\r\nIn-Reply-To: {in_reply_to}").strip()
    raw = letter(subject, body, sender=sender, to=to, message_id=message_id, extra_headers=extra_headers)
    code, _ = send(running.smtp_port, raw, mail_from=sender, rcpt_to=(to,))
    assert code == 250
    return message_id


def subscriber(config, address="dana@example.org") -> dict:
    found = rows(config.storage.database, "SELECT * FROM subscribers WHERE email = ?", [address])
    return dict(found[0]) if found else {}


def outgoing(config, kind: str) -> list:
    return rows(config.storage.database,
                "SELECT * FROM messages WHERE direction = 'outbound' AND kind = ? ORDER BY id", [kind])


# -- double opt-in -------------------------------------------------------------------------

def test_replying_to_the_confirmation_confirms_and_says_thank_you(tmp_path):
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        request = ask(running)
        confirmation = wait_for(lambda: maildir(config), message="the confirmation")[0]
        # A subject a person would write: no token in it.
        assert confirmation["Subject"] == "Confirm your subscription to Enjoy Your Changes"
        assert confirmation["Auto-Submitted"] == "auto-replied"
        reply = ask(running, subject=f"Re: {confirmation['Subject']}", body="> Someone asked...\r\n",
                    in_reply_to=confirmation["Message-ID"], extra_headers=f"References: {request}")
        row = handled(config, reply)
        assert row["disposition"].startswith("confirmed by reply")
        assert subscriber(config)["status"] == "confirmed"
        notice = wait_for(lambda: len(maildir(config)) == 2 and maildir(config)[1], message="the thank-you notice")
        assert "is now subscribed" in notice.get_body(("plain",)).get_content()
    # Request, confirmation, reply and notice share one thread, kept off the columnist's inbox.
    thread = rows(config.storage.database, "SELECT DISTINCT thread_id FROM messages")
    assert len(thread) == 1
    assert rows(config.storage.database, "SELECT status FROM threads")[0]["status"] == "archived"


def test_a_reply_that_lost_its_subject_confirms_by_threading_from_the_same_address(tmp_path):
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        ask(running)
        confirmation = wait_for(lambda: maildir(config), message="the confirmation")[0]
        reply = ask(running, subject="yes", body="yes please\r\n", in_reply_to=confirmation["Message-ID"])
        assert handled(config, reply)["disposition"].startswith("confirmed by reply")
    assert subscriber(config)["status"] == "confirmed"


def test_a_reply_that_kept_only_references_confirms(tmp_path):
    # Some mail programs drop In-Reply-To but keep References (RFC 5322 3.6.4).
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        request = ask(running)
        confirmation = wait_for(lambda: maildir(config), message="the confirmation")[0]
        reply = ask(running, subject="Re: Confirm your subscription", body="yes\r\n",
                    extra_headers=f"References: {request} {confirmation['Message-ID']}")
        assert handled(config, reply)["disposition"].startswith("confirmed by reply")
    assert subscriber(config)["status"] == "confirmed"


def test_a_threaded_reply_from_another_address_does_not_confirm_someone_else(tmp_path):
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        ask(running)
        confirmation = wait_for(lambda: maildir(config), message="the confirmation")[0]
        reply = ask(running, sender="mallory@example.net", subject="yes", in_reply_to=confirmation["Message-ID"])
        handled(config, reply)
    assert subscriber(config)["status"] == "pending"
    assert subscriber(config, "mallory@example.net")["status"] == "pending", "they asked for themselves"


def test_repeated_requests_get_one_confirmation_per_interval(tmp_path):
    clock = SteppingClock(START)
    config = make_config(tmp_path)
    with BackgroundService(config, clock=clock) as running:
        dispositions = [handled(config, ask(running, subject=f"subscribe {n}"))["disposition"] for n in range(3)]
        assert dispositions[0].startswith("confirmation sent")
        assert all(d.startswith("not sent: a confirmation already went") for d in dispositions[1:])
        clock.advance(hours=25)
        assert handled(config, ask(running, subject="subscribe again"))["disposition"].startswith("confirmation sent")
        wait_for(lambda: len(maildir(config)) == 2, message="the second confirmation")
    assert len(outgoing(config, "confirmation")) == 2


def test_a_confirmed_subscriber_asking_again_gets_nothing(tmp_path):
    config = make_config(tmp_path)
    CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)),
                              "subscribers", "add", "dana@example.org", "--confirmed"])
    with BackgroundService(config) as running:
        row = handled(config, ask(running))
    assert row["disposition"] == "not sent: already subscribed"
    assert outgoing(config, "confirmation") == []


def test_a_robot_asking_to_subscribe_is_not_answered(tmp_path):
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        row = handled(config, ask(running, extra_headers="Auto-Submitted: auto-replied"))
    assert row["disposition"].startswith("not answered: Auto-Submitted")
    assert subscriber(config) == {}


def test_the_database_keeps_only_a_hash_of_the_confirmation_token(tmp_path):
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        ask(running)
        confirmation = wait_for(lambda: maildir(config), message="the confirmation")[0]
    token = re.search(r"/subscribe/confirm/([A-Za-z0-9_-]{32})", confirmation.get_body(("plain",)).get_content()).group(1)
    stored = rows(config.storage.database, "SELECT * FROM subscription_tokens")
    assert len(stored) == 1
    assert token not in json.dumps([dict(r) for r in stored])
    assert stored[0]["token_hash"] == subs.hash_token(token)


def test_links_show_a_page_on_get_and_act_only_on_post_until_they_expire(tmp_path):
    clock = SteppingClock(START)
    config = web_config(tmp_path)
    with BackgroundService(config, clock=clock) as running:
        ask(running)
        confirmation = wait_for(lambda: maildir(config), message="the confirmation")[0]
        link = re.search(r"http://\S+/subscribe/confirm/\S+", confirmation.get_body(("plain",)).get_content()).group()
        for _ in range(3):  # link scanners fetch, and fetch again
            assert httpx.get(link).status_code == 200
        assert subscriber(config)["status"] == "pending"
        clock.advance(hours=73)
        expired = httpx.post(link)
        assert expired.status_code == 410 and "expired" in expired.text
        assert subscriber(config)["status"] == "pending"
        unknown = httpx.get(link[:-4] + "AAAA")
        assert unknown.status_code == 404 and "not valid" in unknown.text
        assert unknown.headers["referrer-policy"] == "no-referrer"


# -- leaving ----------------------------------------------------------------------------------

def test_mail_to_the_unsubscribe_address_takes_effect_at_once_with_one_notice(tmp_path):
    config = make_config(tmp_path)
    runner = CliRunner()
    runner.invoke(main, ["--config", str(write_config_file(tmp_path, config)),
                         "subscribers", "add", "dana@example.org", "--confirmed"])
    with BackgroundService(config) as running:
        first = handled(config, ask(running, subject="unsubscribe", to="unsubscribe@column.example"))
        assert first["disposition"].startswith("unsubscribed subscriber")
        assert subscriber(config)["status"] == "unsubscribed"
        second = handled(config, ask(running, subject="unsubscribe me!!", to="unsubscribe@column.example"))
        assert "already unsubscribed" in second["disposition"]
        stranger = handled(config, ask(running, sender="who@example.net", subject="unsubscribe",
                                       to="unsubscribe@column.example"))
        assert "not from a subscriber" in stranger["disposition"]
        notices = wait_for(lambda: maildir(config), message="the notice")
    assert len(notices) == 1 and "no more" in notices[0].get_body(("plain",)).get_content()


def test_a_forged_from_does_not_unsubscribe_someone_else_but_asks_them(tmp_path):
    config = make_config(tmp_path)
    row, _ = _add_confirmed(config, "dana@example.org")
    token = subs.unsubscribe_token(subs.token_key(config), row["id"])

    def forged(message_id):
        raw = letter("unsubscribe", "please\r\n", sender="Dana <dana@example.org>", to="unsubscribe@column.example",
                     message_id=message_id)
        assert send(running.smtp_port, raw, mail_from="mallory@example.net",
                    rcpt_to=("unsubscribe@column.example",))[0] == 250
        return message_id

    with BackgroundService(config) as running:
        first = handled(config, forged("<forged-1@example.net>"))
        second = handled(config, forged("<forged-2@example.net>"))
        asked = wait_for(lambda: maildir(config), message="the request to confirm")
    assert subscriber(config)["status"] == "confirmed"
    assert first["disposition"].startswith("not unsubscribed: envelope sender and From differ")
    assert "already asked to confirm" in second["disposition"]
    assert len(asked) == 1 and asked[0]["To"] == "dana@example.org"
    text = asked[0].get_body(("plain",)).get_content()
    assert f"/unsubscribe/{token}" in text and "nothing has changed yet" in text


def _write_key_whose_token(config, subscriber_id: int, last_char_ok) -> None:
    """Pick the token key so that subscriber ``subscriber_id``'s token ends as wanted."""
    import secrets

    while True:
        key = secrets.token_bytes(32)
        if last_char_ok(subs.unsubscribe_token(key, subscriber_id)[-1]):
            break
    path = config.subscribers.token_key_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key.hex() + "\n")


# Base64url tokens end in "-" one time in 64; CI once met exactly that case.
@pytest.mark.parametrize("ending", ["dash", "letter"])
def test_the_mailto_unsubscribe_works_from_another_address_by_its_token(tmp_path, ending):
    config = make_config(tmp_path)
    _write_key_whose_token(config, 1, (lambda c: c == "-") if ending == "dash" else str.isalpha)
    row, _ = _add_confirmed(config, "dana@example.org")
    assert row["id"] == 1
    token = subs.unsubscribe_token(subs.token_key(config), row["id"])
    with BackgroundService(config) as running:
        done = handled(config, ask(running, sender="dana.forwarded@example.net", subject=f"unsubscribe {token}",
                                   to="unsubscribe@column.example"))
    assert done["disposition"].startswith("unsubscribed subscriber")
    assert subscriber(config)["status"] == "unsubscribed"


def test_an_altered_unsubscribe_token_is_refused_and_changes_nothing(tmp_path):
    config = web_config(tmp_path)
    row, _ = _add_confirmed(config, "dana@example.org")
    key = subs.token_key(config)
    token = subs.unsubscribe_token(key, row["id"])
    assert subs.subscriber_for_unsubscribe_token(key, token) == row["id"]
    forged = subs.unsubscribe_token(b"another key entirely, 32 bytes!!", row["id"])
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (forged, flipped, "x" * 32, "short"):
        assert subs.subscriber_for_unsubscribe_token(key, bad) is None
    with BackgroundService(config):
        answer = httpx.post(f"{config.web.public_url}/unsubscribe/{forged}", content=b"List-Unsubscribe=One-Click")
    assert answer.status_code == 404
    assert subscriber(config)["status"] == "confirmed"


def _add_confirmed(config, address):
    from mailer.store.db import open_database

    db = open_database(config.storage.database)
    try:
        return subs.add_confirmed(db, address, clock=lambda: START)
    finally:
        db.close()


# -- addresses -------------------------------------------------------------------------------

GOOD = {
    "plain": ("dana@example.org", "dana@example.org"),
    "uppercase-folded": ("Dana.Reader@Example.ORG", "dana.reader@example.org"),
    "display-name-and-spaces": ("  Dana <dana@example.org> ", "dana@example.org"),
    "plus-tag": ("dana+column@example.org", "dana+column@example.org"),
    "idn-domain": ("dana@bücher.example", "dana@xn--bcher-kva.example"),
    "trailing-dot-domain": ("dana@example.org.", "dana@example.org"),
}
BAD = {
    "no-at": ("dana.example.org", "exactly one @"),
    "two-ats": ("dana@@example.org", "exactly one @"),
    "no-dot-in-domain": ("dana@localhost", "needs a dot"),
    "space-inside": ("da na@example.org", "spaces"),
    "double-dot-local": ("dana..r@example.org", "not a usable mailbox"),
    "non-ascii-local": ("zoë@example.org", "not a usable mailbox"),
    "empty": ("   ", "empty"),
    "header-injection": ("dana@example.org\r\nBcc: x@evil.example", "spaces or control"),
}


@pytest.mark.parametrize("case", list(GOOD), ids=list(GOOD))
def test_addresses_are_normalised(case):
    given, expected = GOOD[case]
    assert subs.normalize_email(given) == expected


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_addresses_are_refused_with_a_reason(case):
    given, reason = BAD[case]
    with pytest.raises(subs.InvalidAddress, match=reason):
        subs.normalize_email(given)


@given(st.emails())
@settings(max_examples=200, deadline=None)
def test_normalising_is_idempotent_and_keeps_one_at(address):
    try:
        once = subs.normalize_email(address)
    except subs.InvalidAddress:
        return  # refusing is allowed (e.g. a quoted local part); guessing is not
    assert subs.normalize_email(once) == once
    assert once.count("@") == 1 and once == once.lower() and once.isascii()


# -- the command line ---------------------------------------------------------------------------

def cli(tmp_path, config, *args):
    result = CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)), *args])
    return result


def test_import_reports_bad_rows_by_line_number_and_imports_the_good_ones(tmp_path):
    config = make_config(tmp_path)
    data = tmp_path / "readers.csv"
    data.write_text(
        "name,Email\n"                      # line 1: a header naming the column
        "Dana,Dana@Example.org\n"           # 2: good (normalised)
        "Bad,not-an-address\n"              # 3: bad
        "Sam,sam@example.net\n"             # 4: good
        "\n"                                # 5: blank, ignored
        "Dup,dana@example.org\n"            # 6: repeats line 2
        'Quoted,"kim@example.com"\n'        # 7: good
        "Short\n"                           # 8: no email column
    )
    result = cli(tmp_path, config, "subscribers", "import", str(data), "--confirmed")
    assert result.exit_code == 0, result.output
    assert f"{data}: line 3: 'not-an-address': an address needs exactly one @" in result.stderr
    assert f"{data}: line 6: dana@example.org is already on line 2" in result.stderr
    assert f"{data}: line 8: '': empty address" in result.stderr
    assert "added 3" in result.stdout and "3 bad row(s) skipped" in result.stdout
    emails = [r["email"] for r in rows(config.storage.database, "SELECT email FROM subscribers WHERE status = 'confirmed' ORDER BY id")]
    assert emails == ["dana@example.org", "sam@example.net", "kim@example.com"]


def test_import_without_confirmed_sends_each_new_address_a_confirmation(tmp_path):
    config = make_config(tmp_path)
    data = tmp_path / "readers.csv"
    data.write_text("a@example.org\nb@example.org\n")  # no header: the first column
    result = cli(tmp_path, config, "subscribers", "import", str(data))
    assert result.exit_code == 0, result.output
    assert "added 2" in result.stdout and "confirmations queued 2" in result.stdout
    assert [r["status"] for r in rows(config.storage.database, "SELECT status FROM subscribers")] == ["pending"] * 2
    assert len(rows(config.storage.database, "SELECT id FROM outbox WHERE kind = 'confirmation'")) == 2


def test_add_list_remove_and_export(tmp_path):
    config = make_config(tmp_path)
    assert "subscribed (confirmed)" in cli(tmp_path, config, "subscribers", "add", "Sam@Example.net", "--confirmed").output
    added = cli(tmp_path, config, "subscribers", "add", "dana@example.org")
    assert "pending; confirmation queued" in added.output
    bad = cli(tmp_path, config, "subscribers", "add", "nobody")
    assert bad.exit_code != 0 and "exactly one @" in bad.output
    listed = json.loads(cli(tmp_path, config, "subscribers", "list", "--json").stdout)
    assert [(r["email"], r["status"]) for r in listed] == [("sam@example.net", "confirmed"), ("dana@example.org", "pending")]
    removed = cli(tmp_path, config, "subscribers", "remove", "SAM@example.net")
    assert removed.exit_code == 0 and "unsubscribed" in removed.output
    assert cli(tmp_path, config, "subscribers", "remove", "who@example.org").exit_code != 0
    out = tmp_path / "out.csv"
    assert "wrote 2 subscriber(s)" in cli(tmp_path, config, "subscribers", "export", str(out)).output
    exported = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["email"], r["status"]) for r in exported] == [("sam@example.net", "unsubscribed"), ("dana@example.org", "pending")]


def test_every_subscribers_and_digest_command_has_help():
    for group in ("subscribers", "digest"):
        command = main.commands[group]
        assert command.help
        for name, sub in command.commands.items():
            assert sub.help and len(sub.help) > 20, f"mailer {group} {name} needs help text"


# -- bounces -------------------------------------------------------------------------------------

def dsn(recipient: str, status: str = "5.1.1", action: str = "failed", original: str = "<digest.1@column.example>",
        message_id: str = "<auto>") -> bytes:
    """A Postfix-style delivery status report about ``recipient`` (from the fixture)."""
    text = (FIXTURES / "delivery-status.eml").read_text()
    text = text.replace("gone@example.net", recipient).replace("Status: 5.1.1", f"Status: {status}")
    text = text.replace("Action: failed", f"Action: {action}")
    text = text.replace("<digest.42@column.example>", original)
    if message_id == "<auto>":
        message_id = f"<dsn.{next(_NUMBERS)}@mx.example.net>"
    text = text.replace("<dsn.1@mx.example.net>", message_id)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def test_a_delivery_status_report_is_read_with_the_email_package():
    report = bounces.parse_report((FIXTURES / "delivery-status.eml").read_bytes())
    assert report.recipients == [bounces.RecipientStatus("gone@example.net", "failed", "5.1.1", "smtp; 550 5.1.1 User unknown")]
    assert report.recipients[0].hard
    assert report.original_message_id == "<digest.42@column.example>"
    assert bounces.parse_report(b"Subject: not a report\r\n\r\nhello\r\n").recipients == []


def test_hard_bounces_suspend_a_subscriber_after_the_limit_and_list_shows_it(tmp_path):
    config = make_config(tmp_path, subscribers={"hard_bounce_limit": 3})
    _add_confirmed(config, "gone@example.net")
    reports = [
        dsn("gone@example.net", original="<digest.1.1@column.example>"),
        dsn("gone@example.net", original="<digest.1.1@column.example>", message_id="<again@mx.example.net>"),
        dsn("gone@example.net", status="4.2.2", action="delayed", original="<digest.2.1@column.example>"),
        dsn("gone@example.net", original="<digest.3.1@column.example>"),
        dsn("someone-else@example.net", original="<digest.3.2@column.example>"),
    ]
    with BackgroundService(config) as running:
        for raw in reports:
            assert send(running.smtp_port, raw, mail_from="", rcpt_to=("bounces@column.example",))[0] == 250
        dispositions = [handled(config, email.message_from_bytes(r)["Message-ID"])["disposition"] for r in reports]
        assert "hard bounce 1/3 (5.1.1)" in dispositions[0]
        assert "already counted" in dispositions[1]
        assert "not a hard bounce (delayed 4.2.2)" in dispositions[2]
        assert "hard bounce 2/3" in dispositions[3]
        assert "not a subscriber" in dispositions[4]
        assert subscriber(config, "gone@example.net")["status"] == "confirmed"
        last = dsn("gone@example.net", original="<digest.4.1@column.example>")
        send(running.smtp_port, last, mail_from="", rcpt_to=("bounces@column.example",))
        assert "suspended" in handled(config, email.message_from_bytes(last)["Message-ID"])["disposition"]
    assert subscriber(config, "gone@example.net")["status"] == "suspended"
    listed = cli(tmp_path, config, "subscribers", "list")
    line = next(l for l in listed.stdout.splitlines() if "gone@example.net" in l)
    assert "suspended" in line and " 3 " in line
    # Adding them again (they fixed their mailbox) clears the count.
    cli(tmp_path, config, "subscribers", "add", "gone@example.net", "--confirmed")
    assert subscriber(config, "gone@example.net")["hard_bounces"] == 0


@settings(max_examples=300, deadline=None)
@given(token=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                     min_size=32, max_size=32),
       prefix=st.sampled_from(["", "Re: ", "Fwd: please "]),
       suffix=st.sampled_from(["", " ", "\n", ".", " thanks"]))
def test_a_token_is_found_in_a_reply_whatever_characters_it_begins_or_ends_with(token, prefix, suffix):
    # The confirmation reply and the mailto unsubscribe both carry the token in
    # the subject; one a reader's client has quoted must still be recognised.
    assert subs.CONFIRM_IN_TEXT.findall(f"{prefix}confirm {token}{suffix}") == [token]
    assert subs.UNSUBSCRIBE_IN_TEXT.findall(f"{prefix}unsubscribe {token}{suffix}") == [token]
    assert subs.UNSUBSCRIBE_IN_TEXT.findall(f"unsubscribe {token}x") == []  # never a prefix of a longer word
