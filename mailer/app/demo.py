"""The newcomer's tour: the whole story of one letter, in a temporary folder.

``mailer demo`` imports the example topics, starts the real service on a free
port, sends ``examples/letter.eml`` over SMTP like a reader's mail server
would, then shows what came of it: the acknowledgement as it landed in the
Maildir (with its topic links), the archived thread, and a preview of the
weekly digest. It stops the service and leaves every file behind, saying
where each one is, so the newcomer can look and run more commands on them.
"""

from __future__ import annotations

import datetime as dt
import email
import importlib
import json
import logging
import smtplib
import tempfile
import time
from dataclasses import dataclass, field
from email import policy
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mailer import topics
from mailer.app.background import BackgroundService
from mailer.clock import system_clock
from mailer.config import Config, load_config_file
from mailer.store import archive
from mailer.store.db import open_database

#: The examples shipped beside the package (a source checkout or an editable install).
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: Where the digest lives (built beside the demo; the tour copes without it).
DIGEST_MODULE = "mailer.newsletter.digest"

#: How long to wait for the pipeline to write the acknowledgement.
ACK_TIMEOUT_SECONDS = 30.0

CONFIG_TEMPLATE = """\
# Written by `mailer demo`. Use it to look around:
#   mailer --config {path} threads list
[smtp]
host = "127.0.0.1"
port = 0                    # 0: any free port (the demo prints the one it got)

[storage]
database = "mailer.db"

[delivery]
mode = "maildir"            # acknowledgements are written here instead of being sent
maildir = "maildir"

[web]
enabled = false

[digest]
schedules = "schedules"

[subscribers]
token_key_file = "subscribers.key"
"""


class DemoError(Exception):
    """The demo could not run (examples missing, the service did not answer)."""


@dataclass
class DemoResult:
    """Where the demo left everything, for the summary and for tests."""

    folder: Path
    config: Path
    database: Path
    maildir: Path
    log: Path
    letter: Path
    catalog: Path
    smtp_port: int = 0
    acknowledgement: Path | None = None
    topic_urls: list[str] = field(default_factory=list)
    thread_id: int | None = None


def run_demo(console: Console, *, folder: Path | None = None, examples: Path = EXAMPLES) -> DemoResult:
    """Run the tour, printing each step to ``console``; returns where everything is."""
    letter_path = examples / "letter.eml"
    catalog_path = examples / "topics.toml"
    for path in (letter_path, catalog_path):
        if not path.is_file():
            raise DemoError(f"{path} is missing: the demo needs the examples folder of a mailer checkout")
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="mailer-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "mailer.toml"
    config_path.write_text(CONFIG_TEMPLATE.format(path=config_path), encoding="utf-8")
    config = load_config_file(config_path)
    result = DemoResult(
        folder=folder, config=config_path, database=Path(config.storage.database),
        maildir=Path(config.delivery.maildir), log=folder / "mailer.log",
        letter=letter_path, catalog=catalog_path,
    )

    console.print(Panel.fit(
        "[bold]mailer demo[/bold]: one reader's letter, from SMTP to acknowledgement\n"
        f"everything happens in [cyan]{folder}[/cyan]",
        border_style="green",
    ))

    _step(console, 1, "Import the column's topics")
    count = _import_topics(config, catalog_path)
    console.print(f"   {count} topics from {catalog_path}")

    with _service_log(result.log):
        _step(console, 2, "Start the service")
        service = BackgroundService(config)
        service.start()
        try:
            result.smtp_port = service.smtp_port
            console.print(f"   SMTP listener on 127.0.0.1:{result.smtp_port}, on a free port")
            console.print(Text(f"   acknowledgements are written to the Maildir {result.maildir}"), soft_wrap=True)

            _step(console, 3, "A reader writes in")
            raw = letter_path.read_bytes()
            sent = _send_letter(result.smtp_port, raw)
            parsed = email.message_from_bytes(raw, policy=policy.default)
            console.print(f"   {letter_path.name}: from {parsed['From']}, subject [italic]{parsed['Subject']}[/italic]")
            console.print(f"   the listener answered [bold green]{sent}[/bold green]  (250 only once it is on disk)")

            _step(console, 4, "The acknowledgement")
            result.acknowledgement = _wait_for_acknowledgement(result.maildir)
            db = open_database(result.database)
            try:
                result.topic_urls = _show_acknowledgement(console, db, result.acknowledgement)
                result.thread_id = _show_thread(console, db, parsed["Message-ID"])
                _show_digest_preview(console, db, config)
            finally:
                db.close()
        finally:
            _step(console, 7, "Stop the service")
            service.stop()
            console.print("   stopped cleanly: letters in flight committed, the database checkpointed")

    _show_files(console, result)
    return result


# -- the steps ---------------------------------------------------------------------------


def _step(console: Console, number: int, title: str) -> None:
    console.print()
    console.print(f"[bold cyan]{number}. {title}[/bold cyan]")


def _import_topics(config: Config, catalog_path: Path) -> int:
    catalog, problems = topics.load_catalog(catalog_path)
    if problems:
        raise DemoError(f"{catalog_path}: " + "; ".join(problems))
    db = open_database(config.storage.database)
    try:
        topics.import_topics(db, catalog, clock=system_clock, source=str(catalog_path))
    finally:
        db.close()
    return len(catalog)


def _send_letter(port: int, raw: bytes) -> str:
    """Send the letter as a reader's mail server would (CRLF lines); returns the final answer."""
    wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    message = email.message_from_bytes(wire, policy=policy.default)
    sender = message["From"].addresses[0].addr_spec
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("reader-mail.example.org")
        client.mail(sender)
        code, reply = client.rcpt("letters@column.example")
        if code != 250:
            raise DemoError(f"the listener refused the recipient: {code} {reply.decode(errors='replace')}")
        code, reply = client.data(wire)
    if code != 250:
        raise DemoError(f"the listener did not take the letter: {code} {reply.decode(errors='replace')}")
    return f"{code} {reply.decode(errors='replace')}"


def _wait_for_acknowledgement(maildir: Path) -> Path:
    deadline = time.monotonic() + ACK_TIMEOUT_SECONDS
    new = maildir / "new"
    while time.monotonic() < deadline:
        found = sorted(new.iterdir()) if new.exists() else []
        if found:
            return found[0]
        time.sleep(0.05)  # the pipeline runs on the service's own thread; just look again
    raise DemoError(f"no acknowledgement appeared in {new} within {ACK_TIMEOUT_SECONDS:.0f} s")


def _show_acknowledgement(console: Console, db, ack_file: Path) -> list[str]:
    ack = email.message_from_bytes(ack_file.read_bytes(), policy=policy.default)
    head = Table.grid(padding=(0, 1))
    head.add_column(style="bold")
    head.add_column()
    for name in ("From", "To", "Subject", "In-Reply-To", "Auto-Submitted"):
        head.add_row(f"{name}:", str(ack[name] or ""))
    body = ack.get_body(("plain",)).get_content().strip()
    console.print(head)
    console.print(Panel(Text(body), title="the acknowledgement's text, as written to the Maildir",
                        subtitle="plain-text part (an HTML part rides along)", border_style="blue"))
    row = db.execute(
        "SELECT meta FROM messages WHERE kind = 'acknowledgement' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    slugs = json.loads(row[0]).get("topics", []) if row else []
    urls = []
    console.print("   [bold]topic links[/bold] picked for this letter:")
    for slug in slugs:
        topic = topics.get_topic(db, slug)
        if topic is None:
            continue
        urls.append(topic["url"])
        console.print(Text(f"   • {topic['title']}\n     {topic['url']}"), soft_wrap=True)
    return urls


def _show_thread(console: Console, db, message_id: str | None) -> int | None:
    _step(console, 5, "The archived thread")
    row = db.execute(
        "SELECT thread_id, disposition FROM messages WHERE message_id = ? AND direction = 'inbound'",
        [message_id],
    ).fetchone()
    if row is None:
        console.print("   (the letter is not in the archive?)")
        return None
    thread_id, disposition = row
    thread = archive.get_thread(db, thread_id)
    table = Table(title=f"thread {thread_id}: {thread['subject']}  ({thread['status']})", title_justify="left")
    for column in ("#", "way", "kind", "who", "when", "size"):
        table.add_column(column)
    for message in archive.thread_messages(db, thread_id):
        inbound = message["direction"] == "inbound"
        table.add_row(
            str(message["id"]), "in" if inbound else "out", message["kind"],
            message["from_addr"] if inbound else message["correspondent"],
            message["created_at"][:19].replace("T", " "), f"{message['size']:,} B",
        )
    console.print(table)
    console.print(f"   what the pipeline decided: [italic]{disposition}[/italic]")
    console.print("   the raw bytes are kept exactly as received; the letter's text is searchable")
    return thread_id


def _show_digest_preview(console: Console, db, config: Config) -> None:
    _step(console, 6, "The weekly digest, previewed")
    try:
        preview = importlib.import_module(DIGEST_MODULE).preview
        from mailer.newsletter.subscribers import token_key
        from mailer.outbound.templating import template_environment
    except (ImportError, AttributeError):
        console.print("   digest preview: not available yet")
        return
    newest = db.execute("SELECT max(published) FROM topics").fetchone()[0]
    # The examples are dated; preview the digest as it would go out the day after the newest piece.
    moment = dt.datetime.fromisoformat(newest).replace(hour=9, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    try:
        shown = preview(db, config=config, templates=template_environment(config.templates_override()),
                        clock=lambda: moment, key=token_key(config))
    except Exception as exc:  # noqa: BLE001 - the tour goes on; say what went wrong
        console.print(f"   digest preview: could not be rendered ({type(exc).__name__}: {exc})")
        return
    if isinstance(shown, str):
        console.print(f"   digest preview: {shown}")
        return
    lines = shown.text.strip().splitlines()
    excerpt = "\n".join(lines[:18]) + ("\n…" if len(lines) > 18 else "")
    console.print(Panel(Text(excerpt), title=f"Subject: {shown.subject}",
                        subtitle=f"as it would go out on {moment.date()}; {len(shown.topics)} new "
                                 + ("topic" if len(shown.topics) == 1 else "topics"),
                        border_style="magenta"))


def _show_files(console: Console, result: DemoResult) -> None:
    console.print()
    table = Table(title="where everything is", title_justify="left")
    table.add_column("what")
    table.add_column("file", overflow="fold")
    for what, path in (
        ("the folder", result.folder),
        ("config", result.config),
        ("archive (SQLite)", result.database),
        ("acknowledgement", result.acknowledgement),
        ("Maildir", result.maildir),
        ("service log", result.log),
        ("the letter sent", result.letter),
        ("topics catalog", result.catalog),
    ):
        table.add_row(what, str(path) if path else "-")
    console.print(table)
    console.print("try next:")
    for command in ("threads list", f"threads show {result.thread_id or 1}", "outbox list",
                    "threads search therapist"):
        console.print(Text(f"   mailer --config {result.config} {command}"), soft_wrap=True)


class _service_log:
    """While the service runs, its log lines go to a file in the demo folder, not the screen."""

    NAMES = ("mailer", "apscheduler")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handler: logging.Handler | None = None
        self.saved: dict[str, tuple[int, bool]] = {}

    def __enter__(self) -> "_service_log":
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in self.NAMES:
            logger = logging.getLogger(name)
            self.saved[name] = (logger.level, logger.propagate)
            logger.addHandler(self.handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        assert self.handler is not None
        for name, (level, propagate) in self.saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self.handler)
            logger.setLevel(level)
            logger.propagate = propagate
        self.handler.close()
