"""Every decision is shown: the thread says what the pipeline did with each letter, and why.

Letters go in over real SMTP with a stepping clock; the thread is read with
`mailer threads show` (CliRunner) and on the web desk's thread page.
"""

from __future__ import annotations

import datetime as dt

from click.testing import CliRunner

from mailer.app.background import BackgroundService
from mailer.cli import main
from mailer.store.db import open_database
from mailer.newsletter import subscribers as subs

from conftest import SteppingClock, import_example_topics, letter, make_config, rows, send, wait_for
from test_desk_web import desk_client, log_in, thread_of
from test_digest import MONDAY_8AM_NEW_YORK, add_topics, send_now, write_config_file

LETTER = "Dear column,\r\nMy therapist says I avoid conflict with my sister. How do I start?\r\n"


def processed(config, message_id):
    return wait_for(lambda: rows(config.storage.database, "SELECT * FROM messages WHERE message_id = ? "
                                 "AND processed_at IS NOT NULL", [message_id]), message=f"{message_id} handled")[0]


def test_the_thread_says_why_a_letter_was_or_was_not_answered(tmp_path):
    config = make_config(tmp_path)
    import_example_topics(config)
    clock = SteppingClock(dt.datetime(2026, 11, 2, 14, 0, tzinfo=dt.timezone.utc))
    with BackgroundService(config, clock=clock) as running:
        send(running.smtp_port, letter("My sister", LETTER, message_id="<d1@example.org>"), mail_from="dana@example.org")
        first = processed(config, "<d1@example.org>")
        clock.advance(days=2)
        send(running.smtp_port, letter("Re: My sister", LETTER, message_id="<d2@example.org>",
                                       extra_headers="In-Reply-To: <d1@example.org>"), mail_from="dana@example.org")
        processed(config, "<d2@example.org>")
        send(running.smtp_port, letter("Your letter", "Thanks for writing.\r\n", sender="Robin <robin@example.net>",
                                       message_id="<d3@example.net>", extra_headers="Auto-Submitted: auto-replied"),
             mail_from="robin@example.net")
        processed(config, "<d3@example.net>")
    assert len(rows(config.storage.database, "SELECT id FROM messages WHERE kind = 'acknowledgement'")) == 1
    path = write_config_file(tmp_path, config)
    shown = CliRunner().invoke(main, ["--config", str(path), "threads", "show", str(first["thread_id"])]).output
    decisions = [line.strip() for line in shown.splitlines() if line.strip().startswith("Decision:")]
    assert len(decisions) == 2
    assert decisions[0].startswith("Decision: acknowledged: ") and decisions[0].endswith(" topics")
    assert decisions[1] == "Decision: not answered: acknowledged 2 days ago (at most once every 7 days)"
    # Times in the column's zone (America/New_York), as the desk shows them: 14:00 UTC is 09:00 EST.
    assert "2026-11-02 09:00 EST" in shown and "14:00" not in shown

    robot = CliRunner().invoke(main, ["--config", str(path), "threads", "show",
                                      str(thread_of(config, "robin@example.net"))]).output
    assert "Decision: not answered: automatic reply (Auto-Submitted: auto-replied)" in robot

    with desk_client(config) as client:
        assert log_in(client).status_code == 303
        page = client.get(f"/threads/{first['thread_id']}").text
    assert "What mailer did: not answered: acknowledged 2 days ago (at most once every 7 days)" in page
    assert "What mailer did: acknowledged: " in page
    assert "Draft a topic" in page


def test_a_digest_copy_can_be_read_in_the_desk_and_in_threads_show(tmp_path):
    config = make_config(tmp_path)
    add_topics(config, "2026-11-27")
    db = open_database(config.storage.database)
    subs.add_confirmed(db, "dana@example.org", clock=lambda: MONDAY_8AM_NEW_YORK)
    db.close()
    assert send_now(config, SteppingClock(MONDAY_8AM_NEW_YORK)).sent == 1
    thread_id = rows(config.storage.database, "SELECT thread_id FROM messages WHERE kind = 'digest'")[0]["thread_id"]
    shown = CliRunner().invoke(main, ["--config", str(write_config_file(tmp_path, config)),
                                      "threads", "show", str(thread_id)]).output
    assert "A piece from 2026-11-27" in shown and "/unsubscribe/" in shown
    with desk_client(config) as client:
        assert log_in(client).status_code == 303
        page = client.get(f"/threads/{thread_id}").text
    assert "A piece from 2026-11-27" in page
    assert "Draft a topic" not in page  # a digest thread has no reader's letter to draft from
