"""Bounces as real servers send them, and VERP: a bounce is known to be a subscriber's.

The samples under tests/fixtures/bounces/ are real bounces from Exim, qmail,
Postfix, Exchange, GroupWise, Yahoo, HotPOP, MDaemon, SMTP32 and a Sun mail
server (see their README). A digest copy goes to a real SMTP sink; its bounce comes back over
real SMTP to the listener; the subscriber's row is read from the file.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from mailer.app.background import BackgroundService
from mailer.newsletter import bounces
from mailer.newsletter import subscribers as subs
from mailer.newsletter import verp

from conftest import FIXTURES, SteppingClock, rows, send, wait_for
from test_digest import MONDAY_8AM_NEW_YORK, add_topics, digests_at, send_now, smtp_config

SAMPLES = FIXTURES / "bounces"

#: Each sample and the address its server says failed for good.
PERMANENT = {
    "dsn_01.txt": "userx@example.com",           # RFC 3464, Sun Internet Mail Server
    "exim_01.txt": "userx@its.example.nl",       # Exim's plain text
    "qmail_01.txt": "userx@example.de",          # qmail-send
    "postfix_01.txt": "xxxxx@local.ie",          # Postfix, plain text (no DSN part)
    "microsoft_01.txt": "userx@example.COM",     # Exchange 5.5 Internet Mail Service
    "yahoo_01.txt": "userx@example.com",         # Yahoo
    "mdaemon_simple_01.txt": "bbbsss@example.com",  # MDaemon
    "smtp32_01.txt": "userx@example.ph",         # SMTP32
    "qmail_02.txt": "userx@example.com",         # qmail at a hosting provider, mailbox full
    "postfix_04.txt": "userx@mail1.example.com", # a Postfix-derived MTA (Keftamail), quota
    "groupwise_01.txt": "userx@example.EDU",     # Exchange Internet Mail Service in front of GroupWise
    "hotpop_01.txt": "userx@example.com",        # HotPOP, over quota
}


@pytest.mark.parametrize("name", sorted(PERMANENT), ids=sorted(PERMANENT))
def test_a_real_servers_bounce_is_read_as_a_hard_bounce_of_the_address_it_names(name):
    report = bounces.read_bounce((SAMPLES / name).read_bytes())
    hard = {status.recipient.casefold() for status in report.recipients if status.hard}
    assert PERMANENT[name].casefold() in hard


def test_the_rfc_3464_status_is_kept_when_the_report_has_one():
    report = bounces.read_bounce((FIXTURES / "delivery-status.eml").read_bytes())
    assert [(s.recipient, s.status) for s in report.recipients if s.hard] == [("gone@example.net", "5.1.1")]


def test_the_plain_text_formats_are_what_the_rfc_3464_reader_alone_missed():
    # The figure in docs/digest.md: the RFC 3464 reader alone found 1 of these 12; now all 12.
    old = sum(any(s.hard for s in bounces.parse_report((SAMPLES / n).read_bytes()).recipients) for n in PERMANENT)
    new = sum(any(s.hard for s in bounces.read_bounce((SAMPLES / n).read_bytes()).recipients) for n in PERMANENT)
    assert (old, new) == (1, len(PERMANENT))


def test_a_bounce_token_names_its_subscriber_and_cannot_be_forged():
    key = b"k" * 32
    token = verp.bounce_token(key, 42)
    assert re.fullmatch(r"[a-z2-7]{29}", token)
    assert verp.subscriber_for_bounce_token(key, token) == 42
    assert verp.subscriber_for_bounce_token(key, token.upper()) == 42  # a server folded its case
    assert verp.subscriber_for_bounce_token(b"x" * 32, token) is None
    assert verp.subscriber_for_bounce_token(key, verp.bounce_token(key, 43)[:-1] + "a") is None
    assert verp.bounce_token(key, 42) != subs.unsubscribe_token(key, 42).lower()


def test_a_digest_bounced_by_exim_in_plain_text_counts_against_the_subscriber_its_verp_address_names(
        tmp_path, smtp_sink):
    clock = SteppingClock(MONDAY_8AM_NEW_YORK)
    config = smtp_config(tmp_path, smtp_sink, subscribers={"hard_bounce_limit": 2})
    add_topics(config, "2026-11-27")
    with BackgroundService(config, clock=clock) as running:
        from mailer.store.db import open_database
        db = open_database(config.storage.database)
        subs.add_confirmed(db, "dana@example.org", clock=clock)
        db.close()
        assert send_now(config, clock).sent == 1
        verp = digests_at(smtp_sink)[0]["mail_from"]
        assert verp.startswith("bounces+") and "dana" not in verp

        # The forwarding server reports an address the column never knew (Dana's
        # old forwarding target): only the VERP address says whose copy this was.
        sample = (SAMPLES / "exim_01.txt").read_bytes().replace(b"\n", b"\r\n")  # as on the wire
        code, _ = send(running.smtp_port, sample, mail_from="", rcpt_to=(verp,))
        assert code == 250
        row = wait_for(lambda: rows(config.storage.database,
                                    "SELECT disposition FROM messages WHERE kind = 'bounce' AND processed_at IS NOT NULL"),
                       message="the bounce to be handled")[0]
        assert "dana@example.org: hard bounce 1/2 (5.0.0)" in row["disposition"]

        # A made-up tag is the bounces address all the same, but names nobody.
        another = sample.replace(b"<E11SrFM-00058o-00@", b"<E11SrFM-00058o-01@")  # not a retried duplicate
        code, _ = send(running.smtp_port, another, mail_from="",
                       rcpt_to=("bounces+aaaaaaaaaaaaaaaaaaaaaaaaaaaaa@column.example",))
        assert code == 250
        handled = wait_for(lambda: (lambda found: found if len(found) == 2 else None)(rows(
            config.storage.database, "SELECT disposition FROM messages WHERE kind = 'bounce' "
            "AND processed_at IS NOT NULL ORDER BY id")), message="both bounces handled")
        assert "userx@its.example.nl: not a subscriber" in handled[1]["disposition"]
    found = rows(config.storage.database, "SELECT hard_bounces, status FROM subscribers WHERE email = 'dana@example.org'")[0]
    assert (found["hard_bounces"], found["status"]) == (1, "confirmed")


def test_the_listener_takes_tagged_bounce_addresses_and_no_other_tags(config):
    with BackgroundService(config) as running:
        import smtplib
        with smtplib.SMTP("127.0.0.1", running.smtp_port) as client:
            client.ehlo()
            client.mail("")
            assert client.rcpt("bounces+anything@column.example")[0] == 250
            assert client.rcpt("letters+anything@column.example")[0] == 550
            assert client.rcpt("bounces+x@elsewhere.example")[0] == 550
