"""Feed a folder of real-world .eml files through the live listener and report.

    .venv/bin/python bench/corpus.py [DIR]      (default: ../shared/corpus/flanker)

Starts the service in-process (mailer.runner.BackgroundService) on a temporary
folder and a free port, sends every ``*.eml`` under DIR (subfolders included)
over real SMTP to letters@column.example, one session per file, then reads the
archive file back and prints what happened to each message: archived (250)
or refused (code and reason), whether the archived bytes equal what was sent,
whether the parser flagged a problem, and any crash on either side.

Line endings: files on disk often use bare LF, but SMTP carries CRLF lines
and an MTA converts before it sends (RFC 5321 2.3.8). So does this script:
every bare LF becomes CRLF, and a final CRLF is added when the file does not
end with one. "Byte for byte" compares the archive with those normalised
bytes, which is exactly what went on the wire before dot-stuffing.

Exit status: 0 when nothing crashed and every archived message is byte for
byte equal to what was sent; 1 otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mailer.config import config_from_dict, resolve_paths
from mailer.app.background import BackgroundService

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE.parent.parent / "shared" / "corpus" / "flanker"
SENDER = "corpus@example.org"
RECIPIENT = "letters@column.example"
_QUEUED_AS = re.compile(rb"queued as (\d+)")


@dataclass
class Outcome:
    """What happened to one file."""

    name: str
    size: int
    code: int | None = None
    reply: str = ""
    archive_id: int | None = None
    byte_equal: bool | None = None
    parse_flag: str | None = None
    no_text: bool = False
    crash: str | None = None


def as_sent(data: bytes) -> bytes:
    """The bytes an MTA would put on the wire: CRLF line ends, ending in CRLF."""
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


class _Problems(logging.Handler):
    """Keeps every error (and every traceback) logged by the service or aiosmtpd."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def send_one(port: int, raw: bytes) -> tuple[int | None, bytes, str | None]:
    """Send ``raw`` in its own session; (code, reply, client-side exception)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("corpus.example")
            code, reply = client.mail(SENDER)
            if code >= 400:
                return code, reply, None
            code, reply = client.rcpt(RECIPIENT)
            if code >= 400:
                return code, reply, None
            code, reply = client.data(raw)
            return code, reply, None
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error, None
    except Exception as exc:  # noqa: BLE001 - a hang-up or reset is what we look for
        return None, b"", f"{type(exc).__name__}: {exc}"


def run(corpus: Path) -> tuple[list[Outcome], list[logging.LogRecord], float]:
    """Send every .eml under ``corpus`` through a fresh service; return the outcomes."""
    files = sorted(p for p in corpus.rglob("*.eml") if p.is_file())
    problems = _Problems()
    for name in ("mailer", "mail.log"):
        logging.getLogger(name).addHandler(problems)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mailer-corpus-") as tmp:
        folder = Path(tmp)
        config = resolve_paths(config_from_dict({
            "smtp": {"port": 0},
            "web": {"enabled": False, "port": 0},
            "storage": {"database": "corpus.db"},
            "delivery": {"maildir": "maildir"},
            "digest": {"schedules": "schedules"},
        }), folder, source=None)
        sent: dict[str, bytes] = {}
        with BackgroundService(config) as service:
            for path in files:
                raw = as_sent(path.read_bytes())
                name = str(path.relative_to(corpus))
                sent[name] = raw
                code, reply, crash = send_one(service.smtp_port, raw)
                outcome = Outcome(name, len(raw), code, reply.decode("utf-8", "replace"), crash=crash)
                found = _QUEUED_AS.search(reply) if code == 250 else None
                if found:
                    outcome.archive_id = int(found.group(1))
                outcomes.append(outcome)
        # The service has stopped and checkpointed: read the file as an outsider.
        conn = sqlite3.connect(config.storage.database)
        try:
            for outcome in outcomes:
                if outcome.archive_id is None:
                    continue
                row = conn.execute(
                    "SELECT r.raw, m.parse_error, m.body_text FROM messages m "
                    "JOIN raw_messages r ON r.id = m.id "
                    "WHERE m.id = ?", [outcome.archive_id],
                ).fetchone()
                if row is None:
                    outcome.crash = f"250 for id {outcome.archive_id} but no such row"
                    continue
                outcome.byte_equal = bytes(row[0]) == sent[outcome.name]
                outcome.parse_flag = row[1]
                outcome.no_text = not (row[2] or "").strip()
        finally:
            conn.close()
    for name in ("mailer", "mail.log"):
        logging.getLogger(name).removeHandler(problems)
    return outcomes, problems.records, time.monotonic() - started


def report(corpus: Path, outcomes: list[Outcome], problems: list[logging.LogRecord], elapsed: float) -> bool:
    """Print the summary table and the notable files; True when all is well."""
    archived = [o for o in outcomes if o.code == 250]
    refused = [o for o in outcomes if o.code is not None and o.code != 250]
    equal = [o for o in archived if o.byte_equal]
    unequal = [o for o in archived if o.byte_equal is False]
    flagged = [o for o in archived if o.parse_flag]
    no_text = [o for o in archived if o.no_text]
    crashed = [o for o in outcomes if o.crash]

    print(f"corpus:  {corpus}")
    print(f"date:    {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"elapsed: {elapsed:.1f}s")
    print("(bare LF normalised to CRLF and a final CRLF added, as an MTA would, before sending)")
    print()
    rows = [
        ("files", len(outcomes)),
        ("archived (250)", len(archived)),
        ("refused", len(refused)),
        ("byte-for-byte equal", f"{len(equal)}/{len(archived)}"),
        ("parse problems flagged", len(flagged)),
        ("archived with no readable text", len(no_text)),
        ("crashes / exceptions", len(crashed) + len(problems)),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    if refused:
        print("\nrefused:")
        for o in refused:
            print(f"  {o.name} ({o.size} bytes): {o.code} {o.reply}")
    if unequal:
        print("\nNOT byte-for-byte equal:")
        for o in unequal:
            print(f"  {o.name} (archive id {o.archive_id})")
    if flagged:
        print("\nparse problems flagged (archived anyway):")
        for o in flagged:
            print(f"  {o.name}: {o.parse_flag}")
    if no_text:
        print("\narchived with no readable body text (the raw message is kept):")
        for o in no_text:
            print(f"  {o.name}")
    if crashed or problems:
        print("\ncrashes / exceptions:")
        for o in crashed:
            print(f"  {o.name}: {o.crash}")
        for record in problems:
            text = record.getMessage()
            if record.exc_info:
                text += f" [{record.exc_info[0].__name__}: {record.exc_info[1]}]"
            print(f"  log {record.name} {record.levelname}: {text}")
    return not (crashed or problems or unequal)


def main(argv: list[str]) -> int:
    corpus = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    if not corpus.is_dir():
        print(f"no such folder: {corpus}", file=sys.stderr)
        return 2
    outcomes, problems, elapsed = run(corpus)
    return 0 if report(corpus, outcomes, problems, elapsed) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
