"""What is not a letter is never acknowledged, whatever its envelope sender.

Reports, auto-replies and list notices arrive with an ordinary, non-null
envelope sender as often as not. Each test sends one over real SMTP to a
running service and looks at the SQLite file: the message is archived, its
disposition says why it was not answered, and the outbox stays empty. The
messages in tests/fixtures/robots/ are real ones or shaped on real ones (see
the README there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.app.background import BackgroundService
from mailer.rules import robots

from conftest import letter, make_config, rows, send, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "robots"
#: An envelope sender no other rule would stop: only what the message is can.
ORDINARY_SENDER = "relay-7@mail.example.net"


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One service for the module; each test sends its own message and reads its own row."""
    config = make_config(tmp_path_factory.mktemp("robots"))
    service = BackgroundService(config)
    service.start()
    yield config, service
    service.stop()


def disposition_of(config, message_id: str) -> str:
    """The decision recorded for the message, once the pipeline has made it."""
    def check():
        found = rows(config.storage.database,
                     "SELECT disposition FROM messages WHERE message_id = ? AND processed_at IS NOT NULL",
                     [message_id])
        return found[0]["disposition"] if found else None
    return wait_for(check, message=f"message {message_id} to be processed")


def outbox_for(config, message_id: str) -> list:
    """Outgoing mail that answers the message (there must be none)."""
    return rows(config.storage.database,
                "SELECT o.id FROM outbox o JOIN messages m ON m.id = o.message_id "
                "WHERE json_extract(m.meta, '$.answers') = (SELECT id FROM messages WHERE message_id = ?)",
                [message_id])


def deliver(running, raw: bytes, message_id: str, *, mail_from: str = ORDINARY_SENDER) -> str:
    """Send ``raw`` over SMTP, wait for its decision, check nothing answers it; return the disposition."""
    config, service = running
    code, _ = send(service.smtp_port, raw, mail_from=mail_from)
    assert code == 250, "it is archived all the same"
    disposition = disposition_of(config, message_id)
    assert disposition.startswith("not answered"), disposition
    assert outbox_for(config, message_id) == []
    return disposition


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# -- reports -------------------------------------------------------------------------------

def test_arf_feedback_report_is_not_answered(running):
    disposition = deliver(running, fixture("arf-yahoo-feedback.eml"),
                          "<20120711104336.819.40318@returns.bulk.yahoo.com>",
                          mail_from="abuse=column.example@feedback.example.net")
    assert "feedback or abuse report" in disposition and "feedback-report" in disposition


def test_read_receipt_report_is_not_answered(running):
    disposition = deliver(running, fixture("mdn-read-receipt.eml"), "<mdn-1@example.org>",
                          mail_from="robin@example.org")
    assert "disposition-notification" in disposition


def test_any_other_multipart_report_is_not_answered(running):
    raw = (
        "From: Scanner <scanner@example.net>\r\nTo: letters@column.example\r\nSubject: Scan results\r\n"
        "Message-ID: <otherreport-1@example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=x-scan-result; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nNo threats found.\r\n--b--\r\n"
    ).encode()
    disposition = deliver(running, raw, "<otherreport-1@example.net>")
    assert "machine report" in disposition and "x-scan-result" in disposition


def test_dmarc_aggregate_report_is_not_answered(running):
    disposition = deliver(running, fixture("dmarc-aggregate-report.eml"), "<dmarc-1@google.com>",
                          mail_from="dmarc-reports@google.com")
    assert "DMARC" in disposition


def test_tls_rpt_aggregate_report_is_not_answered(running):
    disposition = deliver(running, fixture("tlsrpt-aggregate-report.eml"), "<tlsrpt-1@mail.example.net>")
    assert "TLS-RPT" in disposition or "machine report" in disposition


# -- auto-replies ----------------------------------------------------------------------------

AUTO_REPLY_SUBJECTS = {
    "english_auto_reply": "Auto reply: your letter",
    "english_automatic_reply": "Automatic reply: Re: this week's column",
    "outlook_out_of_office": "Out of Office: A question",
    "out_of_office_autoreply": "Out of Office AutoReply: A question",
    "swedish_autosvar": "Autosvar: A question",
    "german_abwesenheitsnotiz": "Abwesenheitsnotiz: A question",
    "german_automatische_antwort": "Automatische Antwort: A question",
    "french_reponse_automatique": "Réponse automatique : A question",
    "spanish_respuesta_automatica": "Respuesta automática: A question",
    "italian_risposta_automatica": "Risposta automatica: A question",
    "dutch_automatisch_antwoord": "Automatisch antwoord: A question",
    "portuguese_resposta_automatica": "Resposta automática: A question",
    "finnish_automaattinen_vastaus": "Automaattinen vastaus: A question",
    "polish_odpowiedz_automatyczna": "Odpowiedź automatyczna: A question",
}


@pytest.mark.parametrize("subject", list(AUTO_REPLY_SUBJECTS.values()), ids=list(AUTO_REPLY_SUBJECTS))
def test_auto_reply_subject_without_auto_submitted_is_not_answered(running, subject):
    message_id = f"<subject-{sorted(AUTO_REPLY_SUBJECTS.values()).index(subject)}@example.org>"
    raw = letter(subject, "I am out of the office until Monday with limited access to email.\r\n",
                 sender="Kim Colleague <kim@example.org>", message_id=message_id)
    disposition = deliver(running, raw, message_id, mail_from="kim@example.org")
    assert "automatic reply" in disposition and "subject" in disposition


AUTO_REPLY_HEADERS = {
    "x_autogenerated": "X-Autogenerated: Reply",
    "x_autoreply_from": "X-AutoReply-From: kim@example.org",
    "x_mail_autoreply": "X-Mail-Autoreply: dtc.example.org",
    "x_fc_machinegenerated": "X-FC-MachineGenerated: true",
    "x_autoresponse": "X-Autoresponse: yes",
    "x_autoreply": "X-Autoreply: yes",
    "precedence_auto_reply": "Precedence: auto_reply",
}


@pytest.mark.parametrize("header", list(AUTO_REPLY_HEADERS.values()), ids=list(AUTO_REPLY_HEADERS))
def test_auto_reply_vendor_header_is_not_answered(running, header):
    name = header.split(":")[0]
    message_id = f"<header-{name.lower()}@example.org>"
    raw = letter("Thanks for your message", "Thanks, I will get back to you.\r\n",
                 sender="Kim Colleague <kim@example.org>", message_id=message_id, extra_headers=header)
    disposition = deliver(running, raw, message_id, mail_from="kim@example.org")
    assert "automatic reply" in disposition and name.lower() in disposition.lower()


# -- mailing-list administration ----------------------------------------------------------

def test_mailman_not_a_member_notice_is_not_answered(running):
    disposition = deliver(running, fixture("list-not-a-member.eml"), "<notmember-1@lists.example.org>")
    assert "mailing-list notice" in disposition


def test_loop_alert_notice_is_not_answered(running):
    disposition = deliver(running, fixture("list-loop-alert.eml"), "<loop-1@lists.example.net>")
    assert "mailing-list notice" in disposition


def test_sympa_notice_is_not_answered(running):
    disposition = deliver(running, fixture("list-sympa-notice.eml"), "<sympa-1@lists.example.org>")
    assert "mailing-list notice (X-Sympa-To)" in disposition


def test_fml_list_notice_is_not_answered(running):
    disposition = deliver(running, fixture("fml-list-notice.eml"), "<fml-1@ml.example.jp>")
    assert "mailing-list notice (X-ML-" in disposition


# -- forwarded bounces ------------------------------------------------------------------------

def test_forwarded_bounce_is_not_answered(running):
    disposition = deliver(running, fixture("forwarded-bounce.eml"), "<fwdbounce-1@example.org>",
                          mail_from="dana@example.org")
    assert "forwarded delivery report" in disposition


# -- and a letter is still a letter -------------------------------------------------------------

def test_a_readers_letter_about_the_same_words_is_still_answered(running):
    config, service = running
    subject = "Out of office and out of ideas"
    body = ("Dear column, my out-of-office reply has been on for a month and I dread going back.\r\n"
            "My letter to you bounced last week, so here it is again.\r\n")
    raw = letter(subject, body, sender="Noor <noor@example.org>", message_id="<real-letter@example.org>")
    send(service.smtp_port, raw, mail_from="noor@example.org")
    assert disposition_of(config, "<real-letter@example.org>").startswith("acknowledged")


@pytest.mark.parametrize("subject", [
    "Fwd: an article I loved", "Re: your column on burnout", "Automatic thoughts and how to stop them",
    "Out of my depth at work", "On leave: how do I go back?",
])
def test_ordinary_subjects_are_not_auto_replies(subject):
    assert robots.auto_reply_reason(subject, []) is None
    assert robots.forwarded_bounce_reason(subject, "Dear column, I have a question.", []) is None
    assert robots.list_notice_reason(subject, []) is None
