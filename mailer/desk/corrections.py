"""The columnist's corrections to the crisis flag: urgent or not urgent, kept as labelled examples.

The detector reads every letter first, but the columnist reads it properly.
When they disagree, the columnist's word sets the thread's flag, and the
disagreement (or agreement) is kept in ``crisis_labels``: the letter's row
id, the label, what the detector had said, who and when. The letter's text
is never copied there; whoever wants to learn from the labels reads the
letter from the archive, and when ``mailer forget`` erases a reader's
messages their labels go with them (the table's foreign key to ``messages``).
"""

from __future__ import annotations

import sqlite_utils

from mailer.clock import Clock, iso
from mailer.desk.errors import DeskError, ThreadNotFound
from mailer.rules import crisis
from mailer.store import archive

__all__ = ["LABELS", "label_thread", "labelled_letters"]

#: The two labels, as stored.
LABELS = ("urgent", "not-urgent")


def label_thread(db: sqlite_utils.Database, thread_id: int, urgent: bool, *, by: str, clock: Clock) -> dict:
    """Flag a thread urgent or not, and keep the correction for its latest letter; returns the label row.

    The label belongs to the thread's most recent letter from the reader:
    that is the letter the columnist has just read and judged.
    """
    with db.atomic():
        if archive.get_thread(db, thread_id) is None:
            raise ThreadNotFound(thread_id)
        letter = next(iter(db.query(
            "SELECT id, subject, body_text FROM messages WHERE thread_id = ? AND direction = 'inbound' "
            "AND kind = 'letter' ORDER BY created_at DESC, id DESC LIMIT 1", [thread_id])), None)
        if letter is None:
            raise DeskError(f"thread {thread_id} has no letter from a reader to mark")
        detector = crisis.assess(letter["subject"] or "", letter["body_text"] or "").urgent
        db.execute("UPDATE threads SET urgent = ? WHERE id = ?", [int(urgent), thread_id])
        row = {
            "message_id": letter["id"],
            "label": LABELS[0] if urgent else LABELS[1],
            "detector_urgent": int(detector),
            "labelled_by": (by or "")[:200],
            "labelled_at": iso(clock()),
        }
        row["id"] = db["crisis_labels"].insert(row).last_pk
    return row


def labelled_letters(db: sqlite_utils.Database) -> list[dict]:
    """Each labelled letter once, with its latest label and its subject and text, read from the archive.

    For measuring the detector on the columnist's judgement (``bench/crisis.py --db``);
    the rows are read into memory and never written anywhere.
    """
    return list(db.query(
        "SELECT l.message_id, l.label, l.detector_urgent, l.labelled_at, m.subject, m.body_text "
        "FROM crisis_labels l JOIN messages m ON m.id = l.message_id "
        "WHERE l.id = (SELECT max(id) FROM crisis_labels WHERE message_id = l.message_id) "
        "ORDER BY l.message_id"
    ))
