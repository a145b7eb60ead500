"""A thread's original bytes for any mail client: mbox and .eml files."""

from __future__ import annotations

import datetime as dt
import mailbox
import re
from pathlib import Path

import sqlite_utils

from mailer.clock import parse_iso
from mailer.config import Config
from mailer.desk.errors import DeskError, ThreadNotFound
from mailer.desk.text import slug
from mailer.store import archive


def message_bytes(db: sqlite_utils.Database, message: dict, *, config: Config | None = None) -> bytes:
    """The exact bytes of an archived message.

    Digest copies are kept compactly (one frame per digest); they are
    rebuilt, and checked against their SHA-256, by the digest module, which
    needs the config for the unsubscribe-link key.
    """
    try:
        return archive.raw_bytes(db, message["id"])
    except KeyError:
        pass
    if message["kind"] == "digest" and config is not None:
        try:
            from mailer.newsletter.digest import archived_bytes
            from mailer.newsletter.subscribers import token_key

            return archived_bytes(db, message["id"], token_key(config))
        except Exception as exc:  # noqa: BLE001 - any failure here is "cannot rebuild it"
            raise DeskError(f"message {message['id']}: cannot rebuild this digest copy: {exc}") from None
    raise DeskError(f"message {message['id']} ({message['kind']}) has no stored bytes")


def export_mbox(db: sqlite_utils.Database, thread_id: int, path: Path, *, config: Config | None = None) -> int:
    """Append every message of the thread to an mbox file; returns how many.

    mbox stores each message after a ``From `` line and quotes body lines
    starting "From " as ">From " (the format's own rule); otherwise the bytes,
    line endings included, are the ones archived.
    """
    messages = _thread_or_raise(db, thread_id)
    box = mailbox.mbox(str(path), create=True)
    box.lock()
    try:
        for message in messages:
            raw = message_bytes(db, message, config=config)
            box.add(_from_line(message) + b"\n" + raw)
        box.flush()
    finally:
        box.unlock()
        box.close()
    return len(messages)


def export_eml(
    db: sqlite_utils.Database, thread_id: int, folder: Path, *, overwrite: bool = False, config: Config | None = None
) -> list[Path]:
    """Write each message of the thread as one .eml file with its exact archived bytes."""
    messages = _thread_or_raise(db, thread_id)
    folder = Path(folder)
    names = [folder / eml_name(i, m) for i, m in enumerate(messages, start=1)]
    clashes = [p for p in names if p.exists()]
    if clashes and not overwrite:
        raise DeskError(f"{clashes[0]} already exists (choose an empty folder, or overwrite)")
    contents = [message_bytes(db, message, config=config) for message in messages]
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in zip(names, contents):
        name.write_bytes(data)
    return names


def eml_name(position: int, message: dict) -> str:
    """``003-inbound-letter-17.eml``: sorts in thread order, says what it is."""
    return f"{position:03d}-{message['direction']}-{slug(message['kind'], 20) or 'message'}-{message['id']}.eml"


def _thread_or_raise(db: sqlite_utils.Database, thread_id: int) -> list[dict]:
    if archive.get_thread(db, thread_id) is None:
        raise ThreadNotFound(thread_id)
    return archive.thread_messages(db, thread_id)


def _from_line(message: dict) -> bytes:
    sender = message["mail_from"] or (message["from_addr"] if message["direction"] == "inbound" else "")
    sender = re.sub(r"\s", "", sender) or "MAILER-DAEMON"
    try:
        moment = parse_iso(message["created_at"])
    except ValueError:
        moment = dt.datetime.now(dt.timezone.utc)
    stamp = moment.astimezone(dt.timezone.utc).strftime("%a %b %d %H:%M:%S %Y")
    return f"From {sender} {stamp}".encode("utf-8", "replace")
