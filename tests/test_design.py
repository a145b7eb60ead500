"""What readers receive, as they see it: every message and public page in Chromium.

Every message is rendered from the real templates (``examples/design_samples.py``,
the same renders the screenshots in docs/design.md are made from) and loaded into
Debian's chromium at 600 px (a desktop mail pane) and 390 px (a phone): nothing may
overflow sideways, and every link must be a real link. The public pages are served
by a running service and driven the way a reader does: the subscribe form, through
to the confirmation mail and its link; the archive and its Atom feed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import re
import sys
from pathlib import Path

import feedparser
import httpx
import pytest

from mailer.app.background import BackgroundService
from mailer.config import Config
from mailer.newsletter import sending
from mailer.newsletter.subscribers import add_confirmed, token_key, unsubscribe_token
from mailer.outbound.templating import TEXT_WIDTH
from mailer.store.db import open_database

from conftest import free_port, make_config, rows, wait_for
from test_desk_browser import browser  # noqa: F401 - the Chromium fixture
from test_digest import add_topics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from design_samples import maildir_messages, render_messages  # noqa: E402

WIDTHS = (600, 390)
LINK_SCHEMES = ("https://", "http://", "mailto:", "tel:", "sms:", "/")

#: Widest element, and any link that is not a real link, as the browser sees them.
INSPECT = """() => {
  const root = document.documentElement;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > root.clientWidth + 1)
    .map(e => e.tagName + '.' + e.className);
  const links = [...document.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.textContent.trim()]);
  return {scroll: root.scrollWidth, client: root.clientWidth, wide, links};
}"""


def check_page(page, width: int, name: str) -> dict:
    seen = page.evaluate(INSPECT)
    assert seen["scroll"] <= width, f"{name} at {width}px is {seen['scroll']}px wide: {seen['wide'][:5]}"
    assert not seen["wide"], f"{name} at {width}px: {seen['wide'][:5]} stick out"
    for href, label in seen["links"]:
        assert href and href.startswith(LINK_SCHEMES), f"{name}: link {label!r} goes to {href!r}"
        assert label, f"{name}: a link to {href} has no words"
    return seen


@pytest.mark.browser
@pytest.mark.parametrize("width", WIDTHS, ids=["desktop-600", "phone-390"])
def test_every_message_fits_the_screen_and_links_are_links(browser, width):  # noqa: F811
    messages = render_messages(Config())
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    for name, rendered in messages.items():
        page.set_content(rendered.html)
        seen = check_page(page, width, name)
        assert seen["links"], f"{name} links nowhere"
        # The masthead names the column, and the preheader is hidden.
        assert page.locator(".masthead-name").inner_text() == "Enjoy Your Changes"
        assert not page.locator(".preheader").is_visible()
        sheet = page.locator(".sheet").bounding_box()
        assert sheet["width"] <= 600, f"{name}: the column is {sheet['width']}px wide"
    page.context.close()


def test_messages_have_their_css_inlined_and_keep_dark_mode():
    # Gmail and Outlook drop <style>: the look must be on the elements themselves.
    for name, rendered in render_messages(Config()).items():
        html = rendered.html
        assert re.search(r'class="sheet" style="[^"]*max-width: 600px[^"]*solid #2f5d50', html), name
        assert re.search(r'class="content" style="[^"]*font-family: Georgia', html), name
        assert "prefers-color-scheme: dark" in html, f"{name} lost its dark mode"
        assert 'class="preheader"' in html and "display: none" in html, name
        assert max(len(line.encode()) for line in html.splitlines()) < 998, f"{name}: a line too long for SMTP"


def test_plain_text_parts_are_wrapped_at_72_with_links_on_their_own_lines():
    for name, rendered in render_messages(Config()).items():
        for line in rendered.text.splitlines():
            words = line.split()
            if len(line) > TEXT_WIDTH:
                assert len(words) == 1, f"{name}: {line!r} is longer than {TEXT_WIDTH}"
            for word in words:
                if "://" in word:
                    assert len(words) == 1, f"{name}: link not on its own line: {line!r}"


def test_the_colours_and_masthead_come_from_the_column_config():
    config = make_config(Path("/tmp"), column={"masthead": "The Changes Desk", "accent_colour": "#7a2e4d"})
    html = render_messages(config)["acknowledgement"].html
    assert "The Changes Desk" in html and "#7a2e4d" in html and "#2f5d50" not in html


# -- the public side -----------------------------------------------------------------------

@pytest.fixture
def public_site(tmp_path):
    port = free_port()
    config = make_config(tmp_path, web={"enabled": True, "port": port, "public_url": f"http://127.0.0.1:{port}"})
    with BackgroundService(config) as running:
        yield config, running, f"http://127.0.0.1:{port}"


@pytest.mark.browser
def test_a_reader_subscribes_with_the_form_and_confirms_from_the_mail(browser, public_site):  # noqa: F811
    config, running, base = public_site
    for width in WIDTHS:
        page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
        page.goto(base + "/subscribe")
        check_page(page, width, "subscribe form")
        trap = page.locator("#website").bounding_box()  # the honeypot: in the form, out of sight
        assert trap["x"] + trap["width"] <= 0
        page.context.close()

    page = browser.new_context(viewport={"width": 390, "height": 900}).new_page()
    page.goto(base + "/subscribe")
    page.fill("#email", "Dana@Example.org")
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Check your inbox"
    check_page(page, 390, "subscribe: sent")

    mail = wait_for(lambda: maildir_messages(config), message="the confirmation in the Maildir")
    assert len(mail) == 1 and mail[0]["To"].addresses[0].addr_spec == "dana@example.org"
    link = re.search(r"https?://\S+/subscribe/confirm/\S+", mail[0].get_body(("plain",)).get_content()).group()
    assert rows(config.storage.database, "SELECT status FROM subscribers")[0]["status"] == "pending"

    page.goto(link)
    check_page(page, 390, "confirm")
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "You are subscribed"
    assert rows(config.storage.database, "SELECT email, status FROM subscribers")[0]["status"] == "confirmed"

    # Asking again for a subscribed address looks exactly like a first request, and sends nothing.
    page.goto(base + "/subscribe")
    page.fill("#email", "dana@example.org")
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Check your inbox"
    assert len(maildir_messages(config)) == 1
    page.context.close()


def test_the_honeypot_and_the_rate_limits_send_no_mail(public_site):
    config, running, base = public_site
    robot = httpx.post(base + "/subscribe", data={"email": "bot@example.org", "website": "http://spam.example"})
    assert robot.status_code == 200 and "Check your inbox" in robot.text
    assert rows(config.storage.database, "SELECT count(*) AS n FROM subscribers")[0]["n"] == 0

    # Per address: the third request in a day is the last; one client: five an hour.
    answers = [httpx.post(base + "/subscribe", data={"email": "kim@example.org"}).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    others = [httpx.post(base + "/subscribe", data={"email": f"r{i}@example.org"}).status_code for i in range(3)]
    assert others == [200, 200, 429]
    assert "Retry-After" in httpx.post(base + "/subscribe", data={"email": "x@example.org"}).headers
    wait_for(lambda: len(maildir_messages(config)) == 3, message="three confirmations")
    assert rows(config.storage.database, "SELECT count(*) AS n FROM subscribers")[0]["n"] == 3

    bad = httpx.post(base + "/subscribe", data={"email": "not an address"})
    assert bad.status_code == 400 and "Get the weekly digest" in bad.text


def test_public_pages_have_a_csp_and_no_login(public_site):
    config, running, base = public_site
    for path in ("/subscribe", "/archive", "/archive/feed.xml"):
        got = httpx.get(base + path, follow_redirects=False)
        assert got.status_code == 200, path
    page = httpx.get(base + "/subscribe")
    csp = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'<style nonce="{nonce}">' in page.text and "script-src" not in csp and "default-src 'none'" in csp


@pytest.mark.browser
def test_a_sent_digest_is_in_the_archive_without_any_token_and_in_the_feed(browser, public_site):  # noqa: F811
    config, running, base = public_site
    add_topics(config, dt.date.today().isoformat())
    db = open_database(config.storage.database)
    subscriber, _ = add_confirmed(db, "dana@example.org", clock=lambda: dt.datetime.now(dt.timezone.utc))
    db.close()
    # What `mailer digest send` does, on a thread of its own (Playwright's loop owns this one).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        summary = pool.submit(asyncio.run, sending.run_digest(
            config, clock=lambda: dt.datetime.now(dt.timezone.utc), key=token_key(config))).result()
    assert summary.sent == 1
    token = unsubscribe_token(token_key(config), subscriber["id"])
    mailed = wait_for(lambda: [m for m in maildir_messages(config) if m["List-Id"]], message="the digest")[0]
    assert token in mailed.as_string()  # the mailed copy has it; the archive must not

    page = browser.new_context(viewport={"width": 390, "height": 900}).new_page()
    page.goto(base + "/archive")
    check_page(page, 390, "archive")
    page.click("ul.issues a")
    assert re.fullmatch(re.escape(base) + r"/archive/\d+", page.url)
    check_page(page, 390, "archive issue")
    html = page.content()
    assert f"A piece from {dt.date.today().isoformat()}" in html
    assert token not in html and "dana@example.org" not in html and "/unsubscribe/" not in html
    number = page.url.rsplit("/", 1)[1]
    page.context.close()

    feed = feedparser.parse(httpx.get(base + "/archive/feed.xml").content)
    assert not feed.bozo, feed.bozo_exception
    assert [e.link for e in feed.entries] == [f"{base}/archive/{number}"]
    assert feed.entries[0].title == mailed["Subject"]
    assert httpx.get(base + "/archive/999").status_code == 404
