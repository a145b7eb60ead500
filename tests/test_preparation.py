"""Handling prepared before the write transaction: it holds nobody up and decides nothing.

The pipeline computes an acknowledgement (crisis check, topics, rendering,
building) on a read connection before the write transaction that queues it.
These tests check the two things that must stay true: a preparation never
holds the listener's letters (their commits do not wait for it), and what is
decided in the transaction (the limits) still decides, so a preparation
never sends what the archive says must not go.
"""

from __future__ import annotations

import datetime as dt
import threading
from email import message_from_bytes, policy

from conftest import import_example_topics, letter, make_config, rows, send, wait_for
from mailer.app import service as service_module
from mailer.app.background import BackgroundService
from mailer.inbound import acknowledgements, pipeline
from mailer.inbound.handling import PipelineContext
from mailer.outbound.templating import template_environment
from mailer.store import arrivals
from mailer.store.archive import Envelope
from mailer.store.db import open_database, open_readonly
from mailer.store.parsing import parse_message

NOW = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.timezone.utc)


def test_a_letter_is_taken_while_another_ones_acknowledgement_is_being_prepared(tmp_path, monkeypatch):
    # The first letter's preparation is held until the second letter has
    # its 250. Were the preparation done inside the write transaction, the
    # second letter's bytes could not be committed and its 250 would wait.
    entered, release = threading.Event(), threading.Event()

    def held_prepare(db, row, ctx):
        entered.set()
        release.wait(30)
        return acknowledgements.prepare_letter(db, row, ctx)

    monkeypatch.setattr(service_module, "message_preparers", lambda: {"letter": held_prepare})
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        assert send(running.smtp_port, letter("First"), mail_from="first@example.org")[0] == 250
        assert entered.wait(10), "the first letter's acknowledgement was never prepared"
        code, _ = send(running.smtp_port, letter("Second"), mail_from="second@example.org")
        release.set()
        assert code == 250
        wait_for(lambda: len(rows(config.storage.database,
                                  "SELECT id FROM messages WHERE kind = 'acknowledgement'")) == 2,
                 message="both acknowledgements")


def _filed_archive(tmp_path, letters: list[tuple[str, bytes]]):
    config = make_config(tmp_path)
    db = open_database(config.storage.database)
    import_example_topics(config)
    for sender, raw in letters:
        with db.atomic():
            arrivals.receive(db, raw, Envelope(sender, ("letters@column.example",), "127.0.0.1:1"),
                             kind="letter", clock=lambda: NOW)
    for arrival_id, raw in arrivals.unfiled(db, 100):
        with db.atomic():
            arrivals.file_arrival(db, arrival_id, parse_message(raw), clock=lambda: NOW)
    ctx = PipelineContext(config=config, templates=template_environment(config.templates_override()),
                          clock=lambda: NOW)
    return config, db, ctx


def _handle(db, ctx, prepared=None) -> None:
    with db.atomic():
        pipeline.process_pending(db, {"letter": acknowledgements.handle_letter}, ctx, 50, prepared=prepared)


def test_two_letters_from_one_reader_prepared_together_are_acknowledged_once(tmp_path):
    config, db, ctx = _filed_archive(tmp_path, [
        ("dana@example.org", letter("I feel stuck at work", sender="dana@example.org")),
        ("dana@example.org", letter("And one more thing", sender="dana@example.org")),
    ])
    reader = open_readonly(config.storage.database)
    prepared = pipeline.prepare_pending(reader, {"letter": acknowledgements.prepare_letter}, ctx, 50)
    # Neither was acknowledged when they were prepared: both got a message built.
    assert len(prepared) == 2 and all(p.message is not None for p in prepared.values())
    _handle(db, ctx, prepared)
    assert not prepared, "every preparation is taken by its handler"
    dispositions = [r["disposition"] for r in rows(
        config.storage.database, "SELECT disposition FROM messages WHERE direction = 'inbound' ORDER BY id")]
    assert dispositions[0].startswith("acknowledged: ")
    assert dispositions[1].startswith("not answered: acknowledged ")
    assert len(rows(config.storage.database, "SELECT id FROM outbox")) == 1
    reader.close()


def _outcome(config) -> list[tuple]:
    """Each letter's disposition (without archive ids) and its acknowledgement's visible parts."""
    out = []
    for row in rows(config.storage.database,
                    "SELECT m.disposition, r.raw FROM messages m LEFT JOIN messages a "
                    "ON a.kind = 'acknowledgement' AND json_extract(a.meta, '$.answers') = m.id "
                    "LEFT JOIN raw_messages r ON r.id = a.id WHERE m.direction = 'inbound' ORDER BY m.id"):
        disposition = row["disposition"].split(" (message ")[0]
        if row["raw"] is None:
            out.append((disposition,))
            continue
        ack = message_from_bytes(bytes(row["raw"]), policy=policy.default)
        parts = [p.get_content() for p in ack.walk() if not p.is_multipart()]
        out.append((disposition, ack["To"], ack["Subject"], ack["In-Reply-To"], ack["Auto-Submitted"], parts))
    return out


def test_prepared_handling_sends_and_decides_exactly_what_handling_in_the_transaction_does(tmp_path):
    letters = [
        ("dana@example.org", letter("What is a therapist's job?", "I want you to answer!\r\n",
                                    sender="Dana <dana@example.org>")),
        ("lee@example.org", letter("Out of office", "I am away.\r\n", sender="lee@example.org",
                                   extra_headers="Auto-Submitted: auto-replied")),
        ("sam@example.org", letter("I can't go on", "I want to end my life tonight.\r\n",
                                   sender="Sam <sam@example.org>")),
        ("dana@example.org", letter("Again", "Me again.\r\n", sender="Dana <dana@example.org>")),
        ("kim@example.org", letter("Grief", "My mother died and I cannot sleep.\r\n", sender="kim@example.org")),
    ]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config_a, db_a, ctx_a = _filed_archive(tmp_path / "a", letters)
    _handle(db_a, ctx_a)
    config_b, db_b, ctx_b = _filed_archive(tmp_path / "b", letters)
    reader = open_readonly(config_b.storage.database)
    _handle(db_b, ctx_b, pipeline.prepare_pending(reader, {"letter": acknowledgements.prepare_letter}, ctx_b, 50))
    reader.close()
    without, with_preparation = _outcome(config_a), _outcome(config_b)
    assert [o[0].split(":")[0] for o in without] == [
        "acknowledged", "not answered", "acknowledged", "not answered", "acknowledged"]
    assert with_preparation == without
