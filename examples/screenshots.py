"""Screenshots of every message and public page, at 600 px and 390 px, for docs/design.md.

    .venv/bin/python examples/screenshots.py [docs/screenshots]

Messages come from ``design_samples.render_messages`` (what tests/test_design.py
checks); public pages from a real service on a free port, with a sent digest in
its archive. Needs Debian's chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from mailer import topics
from mailer.app.background import BackgroundService
from mailer.config import Config, config_from_dict, resolve_paths
from mailer.newsletter import sending
from mailer.newsletter.subscribers import add_confirmed, token_key, unsubscribe_token
from mailer.store.db import open_database

from design_samples import TOPICS, maildir_messages, render_messages

WIDTHS = (600, 390)
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def _site(folder: Path) -> Config:
    port = _free_port()
    data = {"smtp": {"port": _free_port()},
            "web": {"enabled": True, "port": port, "public_url": f"http://127.0.0.1:{port}"},
            "storage": {"database": "mailer.db"}, "delivery": {"maildir": "maildir"},
            "subscribers": {"token_key_file": "subscribers.key"}}
    return resolve_paths(config_from_dict(data), folder, source=None)


def _shoot(page, out: Path, name: str, width: int) -> None:
    page.screenshot(path=str(out / f"{name}-{width}.png"), full_page=True)


def main(out: Path) -> None:
    """Write ``NAME-600.png`` and ``NAME-390.png`` for every message and page into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    now = lambda: dt.datetime.now(dt.timezone.utc)  # noqa: E731
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as tmp:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        messages = render_messages(Config())
        for width in WIDTHS:
            page = browser.new_context(viewport={"width": width, "height": 800}).new_page()
            for name, rendered in messages.items():
                page.set_content(rendered.html)
                _shoot(page, out, f"mail-{name}", width)
            page.context.close()
        dark = browser.new_context(viewport={"width": 390, "height": 800}, color_scheme="dark").new_page()
        for name in ("acknowledgement", "acknowledgement-crisis", "digest"):
            dark.set_content(messages[name].html)
            _shoot(dark, out, f"mail-{name}-dark", 390)
        dark.context.close()

        config = _site(Path(tmp))
        with BackgroundService(config):
            base = config.web.public_url
            db = open_database(config.storage.database)
            topics.import_topics(db, [topics.Topic(slug=t.slug, title=t.title, url=t.url, summary=t.summary,
                                                   keywords=(), published=dt.date.today().isoformat())
                                      for t in TOPICS], clock=now)
            reader, _ = add_confirmed(db, "dana@example.org", clock=now)
            db.close()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, sending.run_digest(config, clock=now, key=token_key(config))).result()
            unsubscribe = f"{base}/unsubscribe/{unsubscribe_token(token_key(config), reader['id'])}"
            for width in WIDTHS:
                page = browser.new_context(viewport={"width": width, "height": 800}).new_page()
                page.goto(base + "/subscribe")
                _shoot(page, out, "page-subscribe", width)
                page.fill("#email", f"sam{width}@example.org")
                page.click("button[type=submit]")
                _shoot(page, out, "page-subscribe-sent", width)
                mail = _wait(lambda: [m for m in maildir_messages(config) if m["To"].addresses[0].addr_spec
                                      == f"sam{width}@example.org"], "the confirmation")[0]
                link = re.search(r"https?://\S+/subscribe/confirm/\S+",
                                 mail.get_body(("plain",)).get_content()).group()
                page.goto(link)
                _shoot(page, out, "page-confirm", width)
                page.click("button[type=submit]")
                _shoot(page, out, "page-confirmed", width)
                page.goto(unsubscribe)
                _shoot(page, out, "page-unsubscribe", width)
                page.goto(base + "/archive")
                _shoot(page, out, "page-archive", width)
                page.click("ul.issues a")
                _shoot(page, out, "page-archive-issue", width)
                page.context.close()
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
