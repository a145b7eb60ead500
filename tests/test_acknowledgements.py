"""A reader's letter gets one warm acknowledgement, linking topics, in its thread.

Every test sends real letters over SMTP to a running service and looks at
what came out: files in a real Maildir, bytes at a real SMTP sink, rows in
the SQLite file.
"""

from __future__ import annotations

import datetime as dt
import email
import json
import re
import smtplib
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from mailer.cli import main
from mailer.app.background import BackgroundService

from conftest import SmtpSink, SteppingClock, free_port, import_example_topics, letter, make_config, rows, send, wait_for

THERAPIST_LETTER = (
    "Dear column,\r\n"
    "What is a therapist's job? My two therapists just took my money and I feel the same.\r\n"
    "How do I find a good therapist who actually helps?\r\n"
)


def maildir_messages(config) -> list[email.message.EmailMessage]:
    new = Path(config.delivery.maildir) / "new"
    if not new.exists():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(new.iterdir())]


def processed(config, message_id_header: str):
    """The archived letter once the pipeline has decided about it."""
    def check():
        found = rows(config.storage.database,
                     "SELECT * FROM messages WHERE message_id = ? AND processed_at IS NOT NULL",
                     [message_id_header])
        return found[0] if found else None
    return wait_for(check, message=f"letter {message_id_header} to be processed")


def outbox_rows(config):
    return rows(config.storage.database, "SELECT * FROM outbox ORDER BY id")


@pytest.fixture
def ack_config(tmp_path):
    config = make_config(tmp_path)
    import_example_topics(config)
    return config


# -- the main story ---------------------------------------------------------------

def test_letter_gets_exactly_one_acknowledgement_in_maildir_with_topic_links(ack_config):
    raw = letter("What is a therapist's job? I want you to answer!", THERAPIST_LETTER,
                 message_id="<q1@example.org>", extra_headers="References: <older@example.org>")
    with BackgroundService(ack_config) as running:
        code, _ = send(running.smtp_port, raw, mail_from="dana@example.org")
        assert code == 250
        acks = wait_for(lambda: maildir_messages(ack_config), message="acknowledgement in Maildir")
        letter_row = processed(ack_config, "<q1@example.org>")

    assert len(acks) == 1
    ack = acks[0]
    assert ack["To"].addresses[0].addr_spec == "dana@example.org"
    assert ack["To"].addresses[0].display_name == "Dana Reader"
    assert ack["Subject"] == "Re: What is a therapist's job? I want you to answer!"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert ack["In-Reply-To"] == "<q1@example.org>"
    assert ack["References"].split() == ["<older@example.org>", "<q1@example.org>"]
    assert ack["Message-ID"].endswith("@column.example>")
    assert ack["Date"] is not None
    assert ack["Return-Path"] == "<>"  # null reverse path: acknowledgements never bounce back
    text = ack.get_body(("plain",)).get_content()
    html = ack.get_body(("html",)).get_content()
    # Greeted by first name, as the columnist's reply form does; signed once.
    assert text.startswith("Dear Dana,")
    assert "Dear Dana Reader" not in text and "Dear Dana," in html
    assert "https://column.example/topics/what-is-a-therapists-job" in text
    assert "https://column.example/topics/finding-a-good-therapist" in text
    assert 'href="https://column.example/topics/what-is-a-therapists-job"' in html
    assert text.count("Warmly,") == 1 and "Enjoy Your Changes!" not in text
    assert "not every letter gets a personal answer" in text

    # The acknowledgement sits beside the letter, in one thread.
    thread = rows(ack_config.storage.database,
                  "SELECT kind, direction FROM messages WHERE thread_id = ? ORDER BY id",
                  [letter_row["thread_id"]])
    assert [(r["kind"], r["direction"]) for r in thread] == [("letter", "inbound"), ("acknowledgement", "outbound")]
    assert letter_row["disposition"].startswith("acknowledged")


def test_acknowledgement_arrives_once_at_a_real_smtp_relay(tmp_path, smtp_sink):
    config = make_config(tmp_path, delivery={"mode": "smtp", "relay_port": smtp_sink.port})
    import_example_topics(config)
    with BackgroundService(config) as running:
        send(running.smtp_port, letter("Help", THERAPIST_LETTER), mail_from="dana@example.org")
        wait_for(lambda: smtp_sink.messages, message="acknowledgement at the sink")
        wait_for(lambda: outbox_rows(config)[0]["status"] == "sent", message="outbox row marked sent")
    assert len(smtp_sink.messages) == 1
    got = smtp_sink.messages[0]
    assert got["mail_from"] == "<>"  # aiosmtpd's spelling of the null reverse path
    assert got["rcpt_tos"] == ["dana@example.org"]
    parsed = email.message_from_bytes(got["data"], policy=policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied"
    # The bytes on the wire are the bytes in the archive.
    archived = rows(config.storage.database,
                    "SELECT r.raw FROM raw_messages r JOIN messages m ON m.id = r.id WHERE m.kind = 'acknowledgement'")
    assert bytes(archived[0]["raw"]) == got["data"]


# -- never answer: one named case per rule ------------------------------------------

NEVER_ANSWER = {
    "auto_submitted_auto_replied": dict(extra="Auto-Submitted: auto-replied", reason="Auto-Submitted"),
    "auto_submitted_auto_generated": dict(extra="Auto-Submitted: auto-generated", reason="Auto-Submitted"),
    "precedence_bulk": dict(extra="Precedence: bulk", reason="Precedence: bulk"),
    "precedence_junk": dict(extra="Precedence: junk", reason="Precedence: junk"),
    "precedence_list": dict(extra="Precedence: list", reason="Precedence: list"),
    "list_id_header": dict(extra="List-Id: <readers.lists.example.org>", reason="List-Id"),
    "list_unsubscribe_header": dict(extra="List-Unsubscribe: <mailto:u@lists.example.org>", reason="List-Unsubscribe"),
    "feedback_id_header": dict(extra="Feedback-ID: 1:campaign:esp", reason="Feedback-Id"),
    "null_reverse_path": dict(mail_from="", reason="null reverse path"),
    "mailer_daemon": dict(mail_from="MAILER-DAEMON@mx.example.org", sender="MAILER-DAEMON@mx.example.org", reason="automated sender"),
    "postmaster": dict(mail_from="postmaster@example.org", sender="postmaster@example.org", reason="automated sender"),
    "noreply_sender": dict(mail_from="no-reply@shop.example.com", sender="Shop <no-reply@shop.example.com>", reason="automated sender"),
    "our_own_address": dict(mail_from="letters@column.example", sender="letters@column.example", reason="own domain"),
    "our_loop_marker": dict(extra="X-Mailer-Loop: column.example", reason="loop marker"),
    "x_auto_response_suppress": dict(extra="X-Auto-Response-Suppress: All", reason="X-Auto-Response-Suppress"),
}


@pytest.mark.parametrize("case", list(NEVER_ANSWER), ids=list(NEVER_ANSWER))
def test_never_answer_rule(case, ack_config, service_for):
    spec = NEVER_ANSWER[case]
    message_id = f"<{case}@example.org>"
    raw = letter("A question", THERAPIST_LETTER, sender=spec.get("sender", "Dana <dana@example.org>"),
                 message_id=message_id, extra_headers=spec.get("extra", ""))
    running = service_for(ack_config)
    code, _ = send(running.smtp_port, raw, mail_from=spec.get("mail_from", "dana@example.org"))
    assert code == 250, "the letter is archived all the same"
    row = processed(ack_config, message_id)
    assert row["disposition"].startswith("not answered"), row["disposition"]
    assert spec["reason"].lower() in row["disposition"].lower()
    assert outbox_rows(ack_config) == []


def test_delivery_status_report_is_never_answered(ack_config, service_for):
    dsn = (
        "From: Mail Delivery System <mailer@mx.example.org>\r\nTo: letters@column.example\r\n"
        "Subject: Undelivered Mail\r\nMessage-ID: <dsn1@mx.example.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
    ).encode()
    running = service_for(ack_config)
    send(running.smtp_port, dsn, mail_from="someone@mx.example.org")
    row = processed(ack_config, "<dsn1@mx.example.org>")
    assert "delivery status report" in row["disposition"]
    assert outbox_rows(ack_config) == []


# -- no reply storms ------------------------------------------------------------------

def test_reader_writing_three_times_in_a_week_is_acknowledged_once(ack_config):
    clock = SteppingClock(dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc))
    with BackgroundService(ack_config, clock=clock) as running:
        for n in range(3):
            send(running.smtp_port, letter(f"Letter {n}", THERAPIST_LETTER, message_id=f"<w{n}@example.org>"),
                 mail_from="dana@example.org")
            processed(ack_config, f"<w{n}@example.org>")
            clock.advance(days=2)
        # Day 6 has passed; on day 8 after the first acknowledgement a new letter is answered again.
        clock.advance(days=2)
        send(running.smtp_port, letter("Letter 3", THERAPIST_LETTER, message_id="<w3@example.org>"),
             mail_from="dana@example.org")
        processed(ack_config, "<w3@example.org>")
        wait_for(lambda: len(maildir_messages(ack_config)) == 2, message="second acknowledgement")
    dispositions = [r["disposition"] for r in rows(
        ack_config.storage.database, "SELECT disposition FROM messages WHERE kind = 'letter' ORDER BY id")]
    assert dispositions[0].startswith("acknowledged")
    assert "at most once every 7 days" in dispositions[1] and "at most once every 7 days" in dispositions[2]
    assert dispositions[3].startswith("acknowledged")
    assert len(rows(ack_config.storage.database, "SELECT id FROM messages WHERE kind = 'letter'")) == 4


# -- readers in crisis ----------------------------------------------------------------

def test_letter_in_crisis_is_flagged_urgent_and_answered_with_resources_first(ack_config, service_for):
    running = service_for(ack_config)
    # An ordinary letter first: the weekly limit must not keep crisis resources from this reader.
    send(running.smtp_port, letter("Question", THERAPIST_LETTER, message_id="<c0@example.org>"),
         mail_from="sam@example.org")
    processed(ack_config, "<c0@example.org>")
    body = "I can't do this anymore. I have been thinking about how to kill myself.\r\n"
    send(running.smtp_port, letter("tonight", body, message_id="<c1@example.org>"), mail_from="sam@example.org")
    row = processed(ack_config, "<c1@example.org>")
    assert row["disposition"].startswith("acknowledged")
    thread = rows(ack_config.storage.database, "SELECT urgent FROM threads WHERE id = ?", [row["thread_id"]])[0]
    assert thread["urgent"] == 1
    acks = wait_for(lambda: len(maildir_messages(ack_config)) == 2 and maildir_messages(ack_config))
    crisis_ack = next(m for m in acks if m["In-Reply-To"] == "<c1@example.org>")
    text = crisis_ack.get_body(("plain",)).get_content().lstrip()
    assert text.startswith("If you are in danger"), text[:200]
    assert "988" in text.split("Dear")[0], "crisis resources come before the letter"
    # No cheerful sign-off for a reader in crisis, and the calm line at the foot too.
    html = crisis_ack.get_body(("html",)).get_content()
    assert "Enjoy Your Changes!" not in text and "Enjoy Your Changes!" not in html
    assert "With care," in text and "Warmly," not in text
    assert "call 988 or text 988" in " ".join(text.split("Dear")[1].split())
    # In HTML the line is a tel: link, the text line an sms: link, the helpline a real link,
    # and the first of them comes before the greeting.
    assert 'href="tel:988"' in html and 'href="sms:988"' in html
    assert 'href="https://findahelpline.com"' in html
    assert html.index('href="tel:988"') < html.index("Dear reader,")


def test_every_acknowledgement_carries_the_crisis_line_at_its_foot(ack_config, service_for):
    # The pattern lists can miss a letter; this line cannot. An ordinary letter gets it too,
    # after the signature, as links in HTML.
    running = service_for(ack_config)
    send(running.smtp_port, letter("Question", THERAPIST_LETTER, message_id="<f0@example.org>"),
         mail_from="kim@example.org")
    ack = wait_for(lambda: maildir_messages(ack_config), message="acknowledgement")[0]
    text = ack.get_body(("plain",)).get_content()
    html = ack.get_body(("html",)).get_content()
    foot = " ".join(text.split("Warmly,")[1].split())
    assert "If you are struggling or thinking about ending your life" in foot
    assert "call 988 or text 988" in foot and "https://findahelpline.com" in foot
    assert not text.lstrip().startswith("If you are in danger")
    assert html.index("Warmly,") < html.index('href="tel:988"') and 'href="sms:988"' in html


def test_idiom_is_not_a_crisis(ack_config, service_for):
    running = service_for(ack_config)
    send(running.smtp_port, letter("deadline", "This deadline is killing me and I'm dying to know how to cope.\r\n",
                                   message_id="<i1@example.org>"), mail_from="kim@example.org")
    row = processed(ack_config, "<i1@example.org>")
    thread = rows(ack_config.storage.database, "SELECT urgent FROM threads WHERE id = ?", [row["thread_id"]])[0]
    assert thread["urgent"] == 0


# -- header injection -------------------------------------------------------------------

def test_crlf_in_name_and_subject_stays_inside_its_header(ack_config, service_for):
    running = service_for(ack_config)
    raw = letter("=?utf-8?q?Hi=0D=0ABcc:_victim@evil.example?=",
                 THERAPIST_LETTER, sender="=?utf-8?q?Eve=0D=0ABcc:_victim@evil.example?= <eve@example.org>",
                 message_id="<inj@example.org>")
    send(running.smtp_port, raw, mail_from="eve@example.org")
    acks = wait_for(lambda: maildir_messages(ack_config), message="acknowledgement")
    ack = acks[0]
    assert ack.get_all("Bcc") is None
    assert len(ack.get_all("To")) == 1 and len(ack.get_all("Subject")) == 1
    assert ack["To"].addresses[0].addr_spec == "eve@example.org"
    raw_head = (Path(ack_config.delivery.maildir) / "new").iterdir().__next__().read_bytes().split(b"\r\n\r\n")[0]
    assert b"\r\nBcc:" not in raw_head


# -- delivery trouble -------------------------------------------------------------------

def test_relay_down_then_up_delivers_the_acknowledgement_once(tmp_path):
    relay_port = free_port()
    config = make_config(tmp_path, delivery={"mode": "smtp", "relay_port": relay_port, "timeout": 2.0})
    import_example_topics(config)
    sink = SmtpSink()
    with BackgroundService(config) as running:
        send(running.smtp_port, letter("Help", THERAPIST_LETTER), mail_from="dana@example.org")
        row = wait_for(lambda: [r for r in outbox_rows(config) if r["attempts"] >= 1],
                       message="a failed delivery attempt")[0]
        assert row["status"] == "pending" and row["last_error"]
        controller = Controller(sink, hostname="127.0.0.1", port=relay_port, decode_data=False)
        controller.start()
        try:
            wait_for(lambda: outbox_rows(config)[0]["status"] == "sent", timeout=20, message="delivery after relay came back")
        finally:
            controller.stop()
    assert len(sink.messages) == 1


def test_restart_with_pending_outbox_delivers_exactly_once(tmp_path):
    relay_port = free_port()
    config = make_config(tmp_path, delivery={"mode": "smtp", "relay_port": relay_port, "timeout": 2.0})
    import_example_topics(config)
    with BackgroundService(config) as running:
        send(running.smtp_port, letter("Help", THERAPIST_LETTER), mail_from="dana@example.org")
        wait_for(lambda: outbox_rows(config) and outbox_rows(config)[0]["attempts"] >= 1, message="an attempt")
    assert outbox_rows(config)[0]["status"] == "pending"

    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=relay_port, decode_data=False)
    controller.start()
    try:
        for _ in range(2):  # two restarts: the second must not send it again
            with BackgroundService(config):
                wait_for(lambda: outbox_rows(config)[0]["status"] == "sent", timeout=20, message="delivery")
    finally:
        controller.stop()
    assert len(sink.messages) == 1


def test_permanent_refusal_is_marked_failed_and_can_be_retried(tmp_path, smtp_sink):
    smtp_sink.refuse_with = "550 5.1.1 <dana@example.org>: no such user"
    config = make_config(tmp_path, delivery={"mode": "smtp", "relay_port": smtp_sink.port})
    import_example_topics(config)
    config_file = tmp_path / "mailer.toml"
    config_file.write_text(f'[storage]\ndatabase = "{config.storage.database}"\n')
    with BackgroundService(config) as running:
        send(running.smtp_port, letter("Help", THERAPIST_LETTER), mail_from="dana@example.org")
        row = wait_for(lambda: [r for r in outbox_rows(config) if r["status"] == "failed"], message="failure")[0]
        assert "550 5.1.1" in row["last_error"]

        listed = CliRunner().invoke(main, ["--config", str(config_file), "outbox", "list", "--json"])
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.output)[0]["status"] == "failed"

        smtp_sink.refuse_with = None
        result = CliRunner().invoke(main, ["--config", str(config_file), "outbox", "retry", str(row["id"])])
        assert result.exit_code == 0, result.output
        running.service.outbox.wake()
        wait_for(lambda: outbox_rows(config)[0]["status"] == "sent", message="delivery after retry")
    assert len(smtp_sink.messages) == 1


# -- 8-bit text on the wire (RFC 6152) ---------------------------------------------------------

# Whether an acknowledgement is 8-bit depends on its text: accented letters go
# as they are (8bit), plain ASCII is 7bit. The text part is wrapped at 72, so
# even a long accented subject stays on lines short enough for 8bit.
READERS = {
    "zoe@example.org": ("Zoë Reader <zoe@example.org>", "Help", "8bit"),
    "dana@example.org": ("Dana Reader <dana@example.org>", "Help", "7bit"),
    "sam@example.org": ("Sam <sam@example.org>",
                        "Mon café, ma mère et moi: trois années de disputes sur la même chose", "8bit"),
}


def write_as(address: str) -> bytes:
    sender, subject, _ = READERS[address]
    return letter(subject, THERAPIST_LETTER, sender=sender)


def test_an_8bit_acknowledgement_says_body_8bitmime_and_a_7bit_one_says_nothing(tmp_path, smtp_sink):
    config = make_config(tmp_path, delivery={"mode": "smtp", "relay_port": smtp_sink.port})
    import_example_topics(config)
    with BackgroundService(config) as running:
        for address in READERS:
            send(running.smtp_port, write_as(address), mail_from=address)
        wait_for(lambda: len(smtp_sink.messages) == 3, message="three acknowledgements at the sink")

    for got in smtp_sink.messages:
        _, _, encoding = READERS[got["rcpt_tos"][0]]
        ack = email.message_from_bytes(got["data"], policy=policy.default)
        assert ack.get_body(("plain",))["Content-Transfer-Encoding"] == encoding
        eight_bit = not got["data"].isascii()
        assert eight_bit == (encoding == "8bit")
        body = [option for option in got["mail_options"] if option.startswith("BODY=")]
        assert body == (["BODY=8BITMIME"] if eight_bit else []), got["rcpt_tos"]


def test_a_reader_with_an_internationalised_address_is_answered_over_smtputf8(tmp_path, smtp_sink):
    # RFC 6531: the listener takes letters from such addresses, so the
    # acknowledgement must be able to go back to them.
    address = "zoë@exämple.org"
    config = make_config(tmp_path, delivery={"mode": "smtp", "relay_port": smtp_sink.port})
    import_example_topics(config)
    raw = letter("Help", THERAPIST_LETTER, sender=f"Zoë <{address}>")
    with BackgroundService(config) as running:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
            client.ehlo("client.example")
            client.sendmail(address, ["letters@column.example"], raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        got = wait_for(lambda: smtp_sink.messages, message="the acknowledgement at the relay")[0]
    assert got["rcpt_tos"] == [address]
    assert "SMTPUTF8" in got["mail_options"]
    head = got["data"].split(b"\r\n\r\n", 1)[0]
    assert re.search(rb"(?m)^To: .*" + re.escape(address.encode("utf-8")), head), head  # RFC 6532 UTF-8 header


def test_a_relay_without_8bitmime_gets_no_8bit_acknowledgement_but_7bit_ones_still_go(tmp_path):
    sink = SmtpSink()
    # With decode_data=True aiosmtpd does not offer 8BITMIME, like an old relay.
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), decode_data=True)
    controller.start()
    try:
        config = make_config(tmp_path, delivery={"mode": "smtp", "relay_port": controller.port})
        import_example_topics(config)
        with BackgroundService(config) as running:
            send(running.smtp_port, write_as("zoe@example.org"), mail_from="zoe@example.org")
            send(running.smtp_port, write_as("dana@example.org"), mail_from="dana@example.org")
            wait_for(lambda: sink.messages, message="the 7-bit acknowledgement at the relay")
            held = wait_for(lambda: [r for r in outbox_rows(config) if r["attempts"] >= 2 and r["status"] == "pending"],
                            message="the 8-bit acknowledgement retried")
    finally:
        controller.stop()

    assert [m["rcpt_tos"] for m in sink.messages] == [["dana@example.org"]]
    assert json.loads(held[0]["rcpt_to"]) == ["zoe@example.org"]
    assert f"relay 127.0.0.1:{controller.port} does not offer 8BITMIME" in held[0]["last_error"]
    assert "nothing was sent, will retry" in held[0]["last_error"]


def test_outbox_retry_of_unknown_id_is_a_clear_error(tmp_path):
    config_file = tmp_path / "mailer.toml"
    config_file.write_text(f'[storage]\ndatabase = "{tmp_path / "m.db"}"\n')
    result = CliRunner().invoke(main, ["--config", str(config_file), "outbox", "retry", "99"])
    assert result.exit_code != 0
    assert "no outbox message with id 99" in result.output


@pytest.fixture
def service_for():
    """Start a service for a given config; stopped at the end of the test."""
    started = []

    def start(config):
        running = BackgroundService(config)
        running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


# Logging in to the relay (password from the environment, only over TLS) is
# told in tests/test_tls.py: since issue 7 a login in clear is a config error.


# -- archiving our own mail without parsing it again ----------------------------------
#
# outbox.enqueue reads the fields of a message we built from the message
# object (parsing.parse_own) instead of parsing its bytes. The archive must
# hold exactly what parsing the bytes gave before.

import dataclasses  # noqa: E402

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mailer.store import archive  # noqa: E402
from mailer.outbound import outbox
from mailer.outbound.compose import AddressError, Outgoing, Rendered, build_message, make_address, reply_subject  # noqa: E402
from mailer.store.db import open_database  # noqa: E402
from mailer.store.parsing import parse_message, parse_own  # noqa: E402

_FIXED = dt.datetime(2026, 11, 10, 21, 14, 7, tzinfo=dt.timezone.utc)
# Mostly ASCII (the fast path's ground), with the characters that need quoting
# or encoding in headers, and some of everything else.
_ASCII_TRICKS = st.sampled_from(list('"\\()<>,;:@.[]\'=?_-+!#$%&*/{}|~` \t') + ["=?", "?=", "Re:", "RE: re:", "  "])
_HOSTILE_TEXT = st.lists(
    st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=15), _ASCII_TRICKS,
              _ASCII_TRICKS),
    max_size=5,
).map("".join) | st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(["\r", "\n", "\r\n", "=?utf-8?q?x?=", "=?utf-8?b?w6k=?=", " ", "\0",
                                                     "é", "\u2028", "<b>", '"', "\\", "x" * 80])),
    max_size=12,
).map("".join)


def _outgoing(name, subject, text, html, refs, domain="column.example", addr="reader@example.org",
              extra=None) -> Outgoing:
    return Outgoing(
        sender=make_address("letters@column.example", "The Column"),
        recipient=make_address(addr, name),
        subject=reply_subject(subject),
        body=Rendered(text, html),
        domain=domain,
        in_reply_to=refs[-1] if refs else None,
        references=refs,
        extra_headers={**(extra or {}), "Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"},
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_HOSTILE_TEXT,
    subject=_HOSTILE_TEXT,
    text=st.one_of(_HOSTILE_TEXT, st.text(max_size=3000), st.just("x" * 1200 + "\n" + "ü" * 500)),
    html=st.one_of(st.none(), _HOSTILE_TEXT),
    refs=st.lists(st.from_regex(r"<[a-z0-9.]{1,20}@[a-z]{1,10}\.example>", fullmatch=True), max_size=4),
    addr=st.sampled_from(["reader@example.org", "zoë@example.org", "o'brien+tag@example.org"]),
    extra=st.sampled_from([{}, {"Reply-To": "subscribe@column.example"}]),
)
def test_our_own_message_reads_the_same_from_the_object_as_from_its_bytes(name, subject, text, html, refs, addr, extra):
    # Acknowledgements, subscription confirmations (with Reply-To) and the
    # desk's replies all come from build_message.
    try:
        outgoing = _outgoing(name, subject, text, html, refs, addr=addr, extra=extra)
    except AddressError:
        assume(False)
    message = build_message(outgoing, clock=lambda: _FIXED)
    raw = message.as_bytes()
    assert dataclasses.asdict(parse_own(message, raw)) == dataclasses.asdict(parse_message(raw))


def test_an_enqueued_acknowledgement_is_archived_as_if_its_bytes_were_parsed(tmp_path):
    outgoing = _outgoing("Zoë \"Z\" O'Brien", "Re: =?utf-8?q?caf=C3=A9?= and a very long subject " * 4,
                         "Dear Zoë,\n\nThank you.\n" * 30, "<p>Dear Zoë</p>", ["<a@example.org>", "<b@example.org>"])
    message = build_message(outgoing, clock=lambda: _FIXED)
    fast, slow = open_database(tmp_path / "fast.db"), open_database(tmp_path / "slow.db")
    with fast.atomic():
        stored, _ = outbox.enqueue(fast, message, kind="acknowledgement", mail_from="", rcpt_to=["reader@example.org"],
                                   clock=lambda: _FIXED, meta={"answers": 1})
    with slow.atomic():
        archive.store_outbound(slow, message.as_bytes(), kind="acknowledgement", mail_from="",
                               rcpt_to=["reader@example.org"], clock=lambda: _FIXED, meta={"answers": 1})
    fast_row = list(fast.query("SELECT * FROM messages"))
    slow_row = list(slow.query("SELECT * FROM messages"))
    assert fast_row == slow_row
    assert fast.execute("SELECT raw FROM raw_messages").fetchone()[0] == message.as_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_HOSTILE_TEXT, subject=_HOSTILE_TEXT, addr=st.sampled_from(["reader@example.org", "zoë@example.org"]))
def test_built_messages_are_byte_for_byte_those_of_the_stock_email_policies(name, subject, addr):
    # compose uses policies whose header registry makes each header class
    # once; the bytes must be what policy.SMTP / SMTPUTF8 make.
    from email import generator, policy as stock
    from unittest import mock

    from mailer.outbound import compose

    try:
        outgoing = _outgoing(name, subject, "Dear reader,\n" + subject, "<p>" + name + "</p>", ["<a@example.org>"],
                             addr=addr)
    except AddressError:
        assume(False)
    with mock.patch("email.utils.make_msgid", return_value="<fixed@column.example>"), \
            mock.patch.object(generator.Generator, "_make_boundary", return_value="==boundary=="), \
            mock.patch.object(compose.secrets, "token_hex", return_value="0" * 32):
        ours = build_message(outgoing, clock=lambda: _FIXED).as_bytes()
        with mock.patch.object(compose, "_SMTP", stock.SMTP), mock.patch.object(compose, "_SMTPUTF8", stock.SMTPUTF8):
            theirs = build_message(outgoing, clock=lambda: _FIXED).as_bytes()
    assert ours == theirs


def test_an_acknowledgement_has_a_boundary_of_its_own_met_nowhere_in_its_parts():
    import email

    outgoing = _outgoing("Dana", "Boundaries", "Dear reader,\n--=_ is not a boundary\n", "<p>=_ hello</p>", [])
    first = build_message(outgoing, clock=lambda: _FIXED)
    second = build_message(outgoing, clock=lambda: _FIXED)
    raw = first.as_bytes()
    boundary = first.get_boundary()
    assert boundary.startswith("=_") and len(boundary) == 34 and boundary != second.get_boundary()
    assert raw.count(b"--" + boundary.encode()) == 3  # two parts and the close
    parts = [p.get_content() for p in email.message_from_bytes(raw, policy=email.policy.default).iter_parts()]
    assert "--=_ is not a boundary" in parts[0] and "=_ hello" in parts[1]
