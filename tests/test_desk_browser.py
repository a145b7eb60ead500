"""A real browser at the desk: log in, open a thread, search, answer, and see it leave.

Drives Debian's chromium through Playwright against a running service with
its web desk on a free port, exactly what `mailer serve` runs. Screenshots
(desktop and phone widths) are saved under the test's temporary folder.
"""

from __future__ import annotations

import email
import os
import shutil
from email import policy
from pathlib import Path

import pytest

from mailer import desk
from mailer.app.background import BackgroundService

from conftest import free_port, make_config, rows, wait_for
from conftest import import_example_topics
from test_desk_cli import write_letters

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "tea before letters"


def chromium_or_skip() -> str:
    """The chromium binary; skip (or, on CI, fail) when it is missing."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path:
        return path
    message = "Debian's chromium is not installed: `apt-get install chromium` (as root) to run the browser test"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run it)")
    pytest.skip(message)


@pytest.fixture
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def served(tmp_path):
    """A running service with the web desk, Dana's and Sam's threads in its archive."""
    config = make_config(tmp_path, web={"enabled": True, "port": free_port(),
                                        "password_hash": desk.hash_password(PASSWORD)})
    import_example_topics(config)
    with BackgroundService(config) as running:
        ids = write_letters(config, running)
        yield config, running, ids, f"http://127.0.0.1:{config.web.port}"


def test_the_columnist_logs_in_reads_searches_and_answers(browser, served, tmp_path):
    config, running, ids, base = served
    shots = tmp_path / "screenshots"
    shots.mkdir()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("request", lambda r: problems.append(r.url) if not r.url.startswith((base, "data:")) else None)

    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.fill("#password", "not the password")
    page.click("button.primary")
    assert "That password is not right." in page.content()
    page.fill("#password", PASSWORD)
    page.click("button.primary")
    page.wait_for_url(base + "/")
    first = page.locator("ul.threads li").first
    assert "is-urgent" in first.get_attribute("class")
    assert "Sam Quill" in first.inner_text()
    page.screenshot(path=str(shots / "inbox-desktop.png"), full_page=True)

    page.click("text=What is a therapist's job? I want you to answer!")
    page.wait_for_url(f"{base}/threads/{ids['dana']}")
    assert page.locator("li.message.inbound").count() == 2
    assert page.locator("li.message.outbound").count() == 1
    assert page.locator(".topics a").count() >= 1
    page.screenshot(path=str(shots / "thread-desktop.png"), full_page=True)

    page.fill("input[name=q]", "therapist")
    page.press("input[name=q]", "Enter")
    page.wait_for_url(base + "/search?q=therapist")
    assert page.locator("mark").count() >= 1
    page.screenshot(path=str(shots / "search-desktop.png"), full_page=True)

    page.locator("ol.results a").last.click()
    page.wait_for_url(f"{base}/threads/{ids['dana']}#m*")
    page.fill("#reply-text", "Dear Dana,\n\nA good therapist helps you try one small change a week.\n\nWarmly,")
    page.click("button[value=preview]")
    assert "Preview: the reader will get this" in page.content()
    page.click("button[value=send]")
    page.wait_for_selector(".flash")
    assert "Your reply to dana@example.org is on its way" in page.inner_text(".flash")
    # The confirmation is in view, below the sticky header rather than under it.
    header_bottom, flash_top, flash_bottom, viewport = page.evaluate(
        "[document.querySelector('header.top').getBoundingClientRect().bottom, "
        "document.querySelector('.flash').getBoundingClientRect().top, "
        "document.querySelector('.flash').getBoundingClientRect().bottom, window.innerHeight]")
    assert header_bottom <= flash_top and flash_bottom <= viewport, (header_bottom, flash_top, flash_bottom)
    page.screenshot(path=str(shots / "replied-desktop.png"), full_page=True)

    running.service.outbox.wake()
    new = Path(config.delivery.maildir) / "new"

    def the_reply():
        for path in new.iterdir():
            message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            if message["In-Reply-To"] == "<dana-2@example.org>":
                return message
        return None

    sent = wait_for(the_reply, message="the reply in the Maildir")
    text = sent.get_body(("plain",)).get_content()
    assert "one small change a week" in text and "The Columnist" in text
    assert rows(config.storage.database, "SELECT status FROM threads WHERE id = ?", [ids["dana"]])[0]["status"] == "answered"
    page.reload()
    assert page.locator("li.message.kind-reply").count() == 1

    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(base + "/")
    small.screenshot(path=str(shots / "inbox-phone.png"), full_page=True)
    # Every tab of the tab bar can be seen and tapped on a phone: none is cut off at the edge.
    edges = small.evaluate("[...document.querySelectorAll('.views .view')].map(v => v.getBoundingClientRect().right)")
    assert len(edges) == 6 and max(edges) <= 390, edges
    small.goto(f"{base}/threads/{ids['sam']}")
    assert small.locator(".urgent-banner").is_visible()
    width = small.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the thread page scrolls sideways on a phone ({width}px)"
    small.screenshot(path=str(shots / "thread-phone.png"), full_page=True)

    assert problems == [], problems
    assert len(list(shots.iterdir())) == 6
