"""The web desk in-process: login, sessions, CSRF, rate limits, hostile letters, and every page.

The archive is made the real way (letters over SMTP to a running service);
the web application is then driven with Starlette's TestClient, writing
through a real archive writer into the same SQLite file.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import re

import pytest
from starlette.testclient import TestClient

from mailer.store import archive
from mailer import desk
from mailer.clock import system_clock
from mailer.app.background import BackgroundService
from mailer.web import create_app
from mailer.web.guard import CONTENT_SECURITY_POLICY, LoginLimiter
from mailer.store.db import open_database
from mailer.store.writer import DatabaseWriter

from conftest import letter, make_config, rows, send, wait_for
from conftest import import_example_topics
from test_desk_cli import all_processed, write_letters

PASSWORD = "a long and quiet morning"
SECRET = "test-secret-key-0123456789abcdef"
ENV = {"MAILER_DESK_PASSWORD": PASSWORD, "MAILER_SECRET_KEY": SECRET}

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=http://evil/x>"
HTML_LETTER = (
    "From: Mallory <mallory@example.com>\r\nTo: letters@column.example\r\nSubject: html only\r\n"
    "Message-ID: <mallory-html@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<html><body><p>Hello <b>column</b></p><img src=\"http://evil/tracker.gif\">"
    "<script>alert(2)</script><p>&lt;script&gt;alert(3)&lt;/script&gt; is what I typed.</p></body></html>\r\n"
).encode()


def write_hostile_letters(config, running, already: int) -> int:
    """A letter with script and image tags in subject, sender name and body; and an HTML-only letter."""
    send(running.smtp_port, letter(
        f"Help {SCRIPT}", f"My day: {SCRIPT} and {IMG} and \"quotes\" & ampersands.\r\n",
        sender=f'"{IMG}" <eve@example.org>', message_id="<eve-1@example.org>",
    ), mail_from="eve@example.org")
    send(running.smtp_port, HTML_LETTER, mail_from="mallory@example.com")
    wait_for(lambda: all_processed(config, already + 2), message="the hostile letters")
    return already + 2


def thread_of(config, correspondent: str) -> int:
    return rows(config.storage.database, "SELECT id FROM threads WHERE correspondent = ?", [correspondent])[0]["id"]


def make_archive(tmp_path):
    config = make_config(tmp_path)
    import_example_topics(config)
    with BackgroundService(config) as running:
        ids = write_letters(config, running)
        write_hostile_letters(config, running, 3)
    ids["eve"] = thread_of(config, "eve@example.org")
    ids["mallory"] = thread_of(config, "mallory@example.com")
    return config, ids


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """An archive for tests that only read."""
    return make_archive(tmp_path_factory.mktemp("desk-web"))


@pytest.fixture
def fresh(tmp_path):
    """An archive of the test's own, for tests that change it."""
    return make_archive(tmp_path)


@contextlib.contextmanager
def desk_client(config, environ=ENV):
    """A TestClient over the real app with a running archive writer."""
    writer = DatabaseWriter(config.storage.database)
    writer.start()
    try:
        app = create_app(config, writer=writer, clock=system_clock, environ=environ)
        with TestClient(app, follow_redirects=False) as client:
            yield client
    finally:
        writer.stop()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def session_of(client) -> dict:
    """The (signed, not secret) session cookie's contents."""
    value = client.cookies.get("mailer_desk").split(".")[0]
    return json.loads(base64.b64decode(value + "=" * (-len(value) % 4)))


def log_in(client, password: str = PASSWORD, next_path: str = "/"):
    page = client.get("/login")
    return client.post("/login", data={"password": password, "csrf": csrf_of(page.text), "next": next_path})


@pytest.fixture
def client(shared):
    config, _ = shared
    with desk_client(config) as c:
        yield c


@pytest.fixture
def logged_in(client):
    assert log_in(client).status_code == 303
    return client


# -- the login ---------------------------------------------------------------------------------

DESK_PAGES = ["/", "/?view=archived", "/search?q=therapist", "/threads/1", "/threads/1/draft",
              "/threads/1/draft.md", "/threads/1/thread.mbox", "/threads/999", "/no-such-page"]


@pytest.mark.parametrize("path", DESK_PAGES)
def test_no_desk_page_without_login(client, path):
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")
    assert "Dana" not in response.text and "therapist" not in response.text.lower()


@pytest.mark.parametrize("path", ["/threads/1/reply", "/threads/1/status", "/logout"])
def test_no_desk_action_without_login_even_with_a_token(client, shared, path):
    config, _ = shared
    token = csrf_of(client.get("/login").text)
    response = client.post(path, data={"csrf": token, "text": "hello", "status": "archived"})
    assert response.status_code == 403
    assert rows(config.storage.database, "SELECT count(*) AS n FROM messages WHERE kind = 'reply'")[0]["n"] == 0


def test_login_returns_to_the_page_asked_for_and_logout_ends_it(client):
    first = client.get("/threads/1")
    assert first.headers["location"] == "/login?next=%2Fthreads%2F1"
    response = log_in(client, next_path="/threads/1")
    assert response.status_code == 303 and response.headers["location"] == "/threads/1"
    assert client.get("/threads/1").status_code == 200
    page = client.get("/")
    out = client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert client.get("/").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"],
                         ids=["scheme-relative", "absolute", "backslash", "javascript"])
def test_login_never_redirects_off_the_desk(client, target):
    response = log_in(client, next_path=target)
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_a_wrong_password_is_refused(client):
    response = log_in(client, password="not it")
    assert response.status_code == 401
    assert "That password is not right." in response.text
    assert client.get("/").status_code == 303


def test_login_attempts_are_rate_limited(client):
    for _ in range(5):
        assert log_in(client, password="guess").status_code == 401
    response = log_in(client)  # even the right password waits now
    assert response.status_code == 429
    assert "Too many wrong passwords" in response.text
    assert client.get("/").status_code == 303


def test_the_limiter_counts_per_client_and_overall_within_its_window():
    now = [1000.0]
    limiter = LoginLimiter(per_client=3, overall=5, window_seconds=60, clock=lambda: now[0])
    for _ in range(3):
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") == 0
    limiter.failed("10.0.0.2")
    limiter.failed("10.0.0.3")
    assert limiter.retry_after("10.0.0.4") > 0, "five failures overall stop everyone"
    now[0] += 61
    assert limiter.retry_after("10.0.0.1") == 0 and limiter.retry_after("10.0.0.4") == 0
    limiter.failed("10.0.0.1")
    limiter.succeeded("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 0


def test_without_a_password_nobody_logs_in_and_the_page_says_how(shared):
    config, _ = shared
    with desk_client(config, environ={}) as client:
        page = client.get("/login")
        assert "No desk password is set yet" in page.text
        assert "mailer desk hash-password" in page.text and "MAILER_DESK_PASSWORD" in page.text
        response = client.post("/login", data={"password": "", "csrf": session_of(client)["csrf"]})
        assert response.status_code == 503
        assert client.get("/").status_code == 303
        # The public pages do not depend on the desk password.
        assert client.get("/unsubscribe/whatever").status_code not in (303, 401, 403)


def test_a_password_hash_in_config_logs_in(tmp_path, shared):
    import dataclasses

    config, _ = shared
    hashed = dataclasses.replace(config, web=dataclasses.replace(config.web, password_hash=desk.hash_password("hashed pw 123")))
    with desk_client(hashed, environ={"MAILER_SECRET_KEY": SECRET}) as client:
        assert log_in(client, password="hashed pw 123").status_code == 303
        assert client.get("/").status_code == 200
    damaged = dataclasses.replace(config, web=dataclasses.replace(config.web, password_hash="md5$abc"))
    with desk_client(damaged, environ={}) as client:
        page = client.get("/login")
        assert "The desk cannot check passwords" in page.text and "mailer desk hash-password" in page.text
        assert log_in_status(client, "anything") == 503


def log_in_status(client, password):
    client.get("/login")
    return client.post("/login", data={"password": password, "csrf": session_of(client)["csrf"]}).status_code


def test_a_new_password_ends_old_sessions(shared):
    config, _ = shared
    with desk_client(config) as client:
        log_in(client)
        cookie = client.cookies.get("mailer_desk")
    with desk_client(config, environ={**ENV, "MAILER_DESK_PASSWORD": "a different password"}) as client:
        client.cookies.set("mailer_desk", cookie)
        assert client.get("/").status_code == 303
    with desk_client(config) as client:  # same password and secret: the cookie still works
        client.cookies.set("mailer_desk", cookie)
        assert client.get("/").status_code == 200


# -- CSRF, headers, limits ---------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "", "forged-token-forged-token-forged"], ids=["missing", "empty", "forged"])
def test_a_post_without_the_sessions_token_is_refused(logged_in, shared, token):
    config, ids = shared
    data = {"status": "archived"}
    if token is not None:
        data["csrf"] = token
    response = logged_in.post(f"/threads/{ids['dana']}/status", data=data)
    assert response.status_code == 403
    assert "This form has expired" in response.text
    assert rows(config.storage.database, "SELECT status FROM threads WHERE id = ?", [ids["dana"]])[0]["status"] != "archived"


def test_the_login_form_needs_its_token_too(client):
    client.get("/login")
    response = client.post("/login", data={"password": PASSWORD})
    assert response.status_code == 403
    assert client.get("/").status_code == 303


def test_a_token_from_another_session_does_not_work(shared):
    config, ids = shared
    with desk_client(config) as other:
        stolen = csrf_of(other.get("/login").text)
    with desk_client(config) as client:
        log_in(client)
        response = client.post(f"/threads/{ids['dana']}/status", data={"status": "archived", "csrf": stolen})
        assert response.status_code == 403


@pytest.mark.parametrize("path", ["/login", "/", "/threads/1", "/search?q=money", "/threads/999"])
def test_desk_pages_carry_strict_security_headers(logged_in, path):
    response = logged_in.get(path)
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "script-src 'none'" in CONTENT_SECURITY_POLICY
    assert "img-src 'self' data:" in CONTENT_SECURITY_POLICY
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_session_cookie_is_httponly_and_strict(client):
    response = client.get("/login")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


@pytest.mark.parametrize("method, path", [("GET", "/unsubscribe/some-token"), ("POST", "/unsubscribe/some-token"),
                                          ("GET", "/subscribe/confirm/some-token"), ("POST", "/subscribe/confirm/x")])
def test_public_pages_need_no_login_and_no_csrf(client, method, path):
    response = client.request(method, path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code not in (303, 401, 403), response.text[:300]
    assert "content-security-policy" not in response.headers or response.headers.get(
        "content-security-policy") != CONTENT_SECURITY_POLICY


def test_an_oversized_form_is_refused(logged_in, shared):
    _, ids = shared
    token = csrf_of(logged_in.get("/").text)
    response = logged_in.post(f"/threads/{ids['dana']}/reply", data={"csrf": token, "text": "x" * (1024 * 1024 + 10)})
    assert response.status_code == 413


def test_the_stylesheet_needs_no_login(client):
    response = client.get("/desk.css")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")
    assert "@import" not in response.text and "url(http" not in response.text


# -- hostile letters -----------------------------------------------------------------------------

def assert_escaped(page: str) -> None:
    assert SCRIPT not in page and "<script" not in page.lower()
    assert IMG not in page and "<img" not in page.lower()
    assert "http://evil/tracker.gif" not in page
    assert "alert(2)" not in page


def test_script_and_image_tags_in_letters_come_out_as_text(logged_in, shared):
    _, ids = shared
    inbox = logged_in.get("/")
    assert_escaped(inbox.text)
    assert html.escape(IMG) in inbox.text and "Help &lt;script&gt;alert(1)&lt;/script&gt;" in inbox.text

    thread = logged_in.get(f"/threads/{ids['eve']}")
    assert thread.status_code == 200
    assert_escaped(thread.text)
    assert "My day: &lt;script&gt;alert(1)&lt;/script&gt; and &lt;img src=http://evil/x&gt;" in thread.text
    assert "&#34;quotes&#34; &amp; ampersands" in thread.text

    html_thread = logged_in.get(f"/threads/{ids['mallory']}")
    assert_escaped(html_thread.text)
    assert "Hello column" in html_thread.text
    assert "&lt;script&gt;alert(3)&lt;/script&gt; is what I typed." in html_thread.text

    found = logged_in.get("/search", params={"q": "alert"})
    assert found.status_code == 200
    assert_escaped(found.text)
    assert "<mark>alert</mark>" in found.text

    draft = logged_in.get(f"/threads/{ids['eve']}/draft")
    assert_escaped(draft.text)


def test_a_search_query_is_escaped_too(logged_in):
    response = logged_in.get("/search", params={"q": f'"{SCRIPT}'})
    assert_escaped(response.text)
    assert response.status_code == 400


# -- the pages -----------------------------------------------------------------------------------

def test_inbox_puts_urgent_first_then_new_and_counts_each_status(logged_in, shared):
    _, ids = shared
    page = logged_in.get("/").text
    order = [int(n) for n in re.findall(r'<a href="/threads/(\d+)">', page)]
    assert order[0] == ids["sam"]
    assert set(order) == {ids["sam"], ids["dana"], ids["eve"], ids["mallory"]}
    assert "1 urgent letter waiting" in page
    assert re.search(r'view-new[^>]*>New<span class="n">4</span>', page)
    assert re.search(r'view-urgent[^>]*>Urgent<span class="n">1</span>', page)
    urgent = logged_in.get("/?view=urgent").text
    assert re.findall(r'<a href="/threads/(\d+)">', urgent) == [str(ids["sam"])]


def test_a_thread_shows_every_message_in_order_with_its_topics_and_the_urgent_banner(logged_in, shared):
    _, ids = shared
    page = logged_in.get(f"/threads/{ids['dana']}").text
    kinds = re.findall(r'class="message (inbound|outbound) kind-(\w+)"', page)
    assert kinds == [("inbound", "letter"), ("outbound", "acknowledgement"), ("inbound", "letter")]
    assert "Topics linked in this acknowledgement" in page
    assert "What Is a Therapist&#39;s Job?" in page
    assert 'href="https://column.example/topics/what-is-a-therapists-job" rel="noopener noreferrer"' in page
    assert "Urgent." not in page
    assert "Dear Dana," in page  # the reply form starts the letter

    sam = logged_in.get(f"/threads/{ids['sam']}").text
    assert 'class="banner urgent-banner" role="alert"' in sam and "Urgent." in sam


def test_an_unknown_thread_is_a_404(logged_in):
    response = logged_in.get("/threads/999")
    assert response.status_code == 404 and "There is no thread 999" in response.text


def test_search_shows_ranked_snippets_and_explains_bad_queries(logged_in, shared):
    _, ids = shared
    page = logged_in.get("/search", params={"q": "therapist"})
    assert page.status_code == 200
    assert "<mark>therapist" in page.text
    assert f'href="/threads/{ids["dana"]}#m' in page.text
    bad = logged_in.get("/search", params={"q": "money AND (help"})
    assert bad.status_code == 400
    assert "the brackets do not pair up" in bad.text and "Search for the text literally instead" in bad.text
    address = logged_in.get("/search", params={"q": "sam.quill@example.net"})
    assert address.status_code == 200 and "Searched for the words literally" in address.text
    assert f'href="/threads/{ids["sam"]}#m' in address.text


def test_search_says_when_only_the_newest_matches_were_ranked(logged_in, monkeypatch):
    ranked = archive.search
    monkeypatch.setattr(archive, "search", lambda db, query, **options: ranked(db, query, **options, rank_newest=1))
    page = logged_in.get("/search", params={"q": "therapist"})
    assert page.status_code == 200
    assert "More than 1 messages match: these are the best of the newest 1." in page.text
    assert page.text.count('class="result ') == 1


def test_topic_draft_page_and_download(logged_in, shared):
    _, ids = shared
    page = logged_in.get(f"/threads/{ids['sam']}/draft")
    assert page.status_code == 200 and "slug: i-cant-go-on" in page.text
    assert "sam.quill" not in page.text.lower() and "Quill" not in page.text.split("<textarea")[1]
    download = logged_in.get(f"/threads/{ids['sam']}/draft.md")
    assert download.headers["content-disposition"] == 'attachment; filename="topic-draft-%d.md"' % ids["sam"]
    assert download.text.startswith("---\n")


def test_mbox_download_holds_the_original_letter(logged_in, shared):
    config, ids = shared
    response = logged_in.get(f"/threads/{ids['dana']}/thread.mbox")
    assert response.status_code == 200 and response.headers["content-type"] == "application/mbox"
    raw = bytes(rows(config.storage.database,
                     "SELECT raw FROM raw_messages WHERE id = (SELECT min(id) FROM messages WHERE thread_id = ?)",
                     [ids["dana"]])[0]["raw"])
    assert raw in response.content


def test_reply_preview_then_send_answers_the_thread(fresh):
    config, ids = fresh
    with desk_client(config) as client:
        log_in(client)
        page = client.get(f"/threads/{ids['dana']}")
        token = csrf_of(page.text)
        text = "Dear Dana,\n\nA good therapist helps you try things.\n"
        preview = client.post(f"/threads/{ids['dana']}/reply", data={"csrf": token, "text": text, "action": "preview"})
        assert preview.status_code == 200
        assert "Preview: the reader will get this" in preview.text and "The Columnist" in preview.text
        assert rows(config.storage.database, "SELECT count(*) AS n FROM messages WHERE kind = 'reply'")[0]["n"] == 0

        sent = client.post(f"/threads/{ids['dana']}/reply", data={"csrf": token, "text": text, "action": "send"})
        assert sent.status_code == 303 and sent.headers["location"] == f"/threads/{ids['dana']}#flash"
        after = client.get(sent.headers["location"])
        assert "Your reply to dana@example.org is on its way" in after.text
        assert "kind-reply" in after.text and "Waiting to be delivered" in after.text

        empty = client.post(f"/threads/{ids['dana']}/reply", data={"csrf": token, "text": "  ", "action": "send"})
        assert empty.status_code == 400 and "the reply is empty" in empty.text
    reply = rows(config.storage.database, "SELECT * FROM messages WHERE kind = 'reply'")
    assert len(reply) == 1 and reply[0]["in_reply_to"] == "<dana-2@example.org>"
    assert rows(config.storage.database, "SELECT status FROM threads WHERE id = ?", [ids["dana"]])[0]["status"] == "answered"
    assert rows(config.storage.database, "SELECT status FROM outbox WHERE message_id = ?", [reply[0]["id"]])[0]["status"] == "pending"


def test_status_buttons_file_the_thread(fresh):
    config, ids = fresh
    with desk_client(config) as client:
        log_in(client)
        token = csrf_of(client.get(f"/threads/{ids['eve']}").text)
        archived = client.post(f"/threads/{ids['eve']}/status", data={"csrf": token, "status": "archived"})
        assert archived.status_code == 303 and archived.headers["location"] == "/"
        assert f"Thread {ids['eve']} archived." in client.get("/").text
        assert f'href="/threads/{ids["eve"]}"' not in client.get("/").text
        assert f'href="/threads/{ids["eve"]}"' in client.get("/?view=archived").text
        back = client.post(f"/threads/{ids['eve']}/status", data={"csrf": token, "status": "new"})
        assert back.status_code == 303
        bad = client.post(f"/threads/{ids['eve']}/status", data={"csrf": token, "status": "deleted"})
        assert bad.status_code == 400
    assert rows(config.storage.database, "SELECT status FROM threads WHERE id = ?", [ids["eve"]])[0]["status"] == "new"


@pytest.mark.parametrize("text, shown", [
    ("The first one listened to me talk every week for almost a year and\nnever once suggested anything.",
     "The first one listened to me talk every week for almost a year and never once suggested anything."),
    ("If you are in danger or thinking about ending your life, reach out now.\nIn the US: call 988.",
     "If you are in danger or thinking about ending your life, reach out now.\nIn the US: call 988."),
    ("Dana Reader\n42 Elm Street\nSpringfield", "Dana Reader\n42 Elm Street\nSpringfield"),
    ("A line long enough to have been wrapped by a mail program, surely.\n  * an item\n> a quote",
     "A line long enough to have been wrapped by a mail program, surely.\n  * an item\n> a quote"),
    ("soft \nbreak", "soft break"),
    ("Warmly,\n\n-- \nThe Columnist", "Warmly,\n\n-- \nThe Columnist"),
    ("I hope you can help me with this question, it has been a hard year.\nThank you,\nDana",
     "I hope you can help me with this question, it has been a hard year.\nThank you,\nDana"),
], ids=["wrapped-paragraph", "sentence-per-line-stays", "short-lines-stay", "items-and-quotes-stay", "format-flowed", "signature-stays",
        "closing-stays"])
def test_letters_are_reflowed_for_reading_not_rewritten(text, shown):
    assert desk.reflow(text) == shown


# -- the tabs and actions a columnist trips over ----------------------------------------------

def test_an_archived_subscription_thread_is_counted_and_listed_under_archived(tmp_path):
    config = make_config(tmp_path)
    with BackgroundService(config) as running:
        send(running.smtp_port, letter("subscribe", "please", sender="Kim <kim@example.org>",
                                       to="subscribe@column.example", message_id="<kim-sub@example.org>"),
             mail_from="kim@example.org", rcpt_to=("subscribe@column.example",))
        wait_for(lambda: all_processed(config, 1), message="the subscription request")
    thread_id = thread_of(config, "kim@example.org")
    with contextlib.closing(open_database(config.storage.database)) as db:
        desk.mark(db, thread_id, "archived")
    with desk_client(config) as c:
        assert log_in(c).status_code == 303
        listed = c.get("/?view=archived").text
        tab = re.search(r'view-archived[^>]*>Archived<span class="n">(\d+)</span>', listed).group(1)
        assert tab == "1" and f'href="/threads/{thread_id}"' in listed
        all_tab = re.search(r'view-all[^>]*>All<span class="n">(\d+)</span>', listed).group(1)
        assert all_tab == "1"
        # A subscription request is not a letter: there is no topic to draft from it.
        page = c.get(f"/threads/{thread_id}").text
        assert "Draft a topic" not in page


def test_a_letter_thread_still_offers_draft_a_topic(logged_in, shared):
    _, ids = shared
    assert "Draft a topic" in logged_in.get(f"/threads/{ids['dana']}").text


# -- sessions the server can end, and a login limit nobody can dodge or turn on the columnist ----

def test_a_cookie_copied_before_logout_is_dead_for_pages_and_forms(shared):
    config, ids = shared
    with desk_client(config) as client:
        log_in(client)
        page = client.get("/")
        copied_cookie, copied_csrf = client.cookies.get("mailer_desk"), csrf_of(page.text)
        assert client.post("/logout", data={"csrf": copied_csrf}).status_code == 303
    with desk_client(config) as thief:  # the same password and secret, even after a restart
        thief.cookies.set("mailer_desk", copied_cookie)
        assert thief.get("/").status_code == 303
        assert thief.get(f"/threads/{ids['dana']}").status_code == 303
        response = thief.post(f"/threads/{ids['dana']}/status", data={"status": "archived", "csrf": copied_csrf})
        assert response.status_code == 403
    assert rows(config.storage.database, "SELECT status FROM threads WHERE id = ?", [ids["dana"]])[0]["status"] != "archived"


def test_log_out_everywhere_ends_every_browsers_login(shared):
    config, _ = shared
    with desk_client(config) as laptop, desk_client(config) as phone:
        log_in(laptop)
        log_in(phone)
        assert laptop.get("/").status_code == 200 and phone.get("/").status_code == 200
        page = phone.get("/")
        assert 'name="everywhere"' in page.text
        out = phone.post("/logout", data={"csrf": csrf_of(page.text), "everywhere": "1"})
        assert out.status_code == 303
        assert laptop.get("/").status_code == 303
        assert phone.get("/").status_code == 303
        assert log_in(laptop).status_code == 303 and laptop.get("/").status_code == 200


def test_the_overall_limit_does_not_hold_back_a_known_client():
    now = [1000.0]
    limiter = LoginLimiter(per_client=3, overall=5, window_seconds=60, clock=lambda: now[0])
    limiter.succeeded("192.0.2.1")  # the columnist's own address logged in earlier
    for n in range(6):
        limiter.failed(f"10.0.0.{n}")  # a stranger spread over many addresses
    assert limiter.retry_after("10.0.0.99") > 0, "strangers wait"
    assert limiter.retry_after("192.0.2.1") == 0, "the columnist's own client does not"
    assert limiter.retry_after("198.51.100.7", known=True) == 0, "nor a browser that logged in before"
    for _ in range(3):
        limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") > 0, "its own failures still count"


def test_a_browser_that_logged_in_before_gets_through_a_strangers_flood(shared):
    config, _ = shared
    with desk_client(config) as client:
        log_in(client)
        page = client.get("/")
        client.post("/logout", data={"csrf": csrf_of(page.text)})
        limiter = _limiter_of(client)
        for n in range(limiter.overall):
            limiter.failed(f"10.1.{n // 250}.{n % 250}")
        assert log_in(client).status_code == 303
    with desk_client(config) as stranger:
        limiter = _limiter_of(stranger)
        for n in range(limiter.overall):
            limiter.failed(f"10.1.{n // 250}.{n % 250}")
        assert log_in(stranger).status_code == 429


def _limiter_of(client) -> LoginLimiter:
    """The limiter of the app behind ``client`` (found through its middleware chain)."""
    layer = client.app.middleware_stack
    while layer is not None and not hasattr(layer, "state"):
        layer = getattr(layer, "app", None)
    return layer.state.limiter


def test_a_forged_x_forwarded_for_does_not_reset_the_login_limit(tmp_path, monkeypatch):
    import httpx

    from conftest import free_port

    monkeypatch.setenv("MAILER_DESK_PASSWORD", PASSWORD)
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    config = make_config(tmp_path, web={"enabled": True, "port": free_port()})
    with BackgroundService(config):
        base = f"http://127.0.0.1:{config.web.port}"
        statuses = []
        for n in range(6):
            with httpx.Client(base_url=base, timeout=10) as browser:
                token = csrf_of(browser.get("/login").text)
                statuses.append(browser.post("/login", data={"password": "guess", "csrf": token},
                                             headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code)
    assert statuses == [401] * 5 + [429]


def test_x_forwarded_for_counts_from_a_trusted_proxy(tmp_path, monkeypatch):
    import httpx

    from conftest import free_port

    monkeypatch.setenv("MAILER_DESK_PASSWORD", PASSWORD)
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    config = make_config(tmp_path, web={"enabled": True, "port": free_port(), "trusted_proxies": "127.0.0.1"})
    with BackgroundService(config):
        base = f"http://127.0.0.1:{config.web.port}"
        statuses = []
        for forwarded in ["203.0.113.1"] * 6 + ["203.0.113.2"]:
            with httpx.Client(base_url=base, timeout=10) as browser:
                token = csrf_of(browser.get("/login").text)
                statuses.append(browser.post("/login", data={"password": "guess", "csrf": token},
                                             headers={"X-Forwarded-For": forwarded}).status_code)
    assert statuses == [401] * 5 + [429, 401], "one client behind the proxy is limited, not the next"


def test_the_reply_form_warns_when_the_reply_would_go_to_someone_else(fresh):
    config, ids = fresh
    with BackgroundService(config) as running:
        send(running.smtp_port, letter(
            "Re: What is a therapist's job? I want you to answer!", "Please write back.\r\n", sender="Dana <dana@example.org>",
            message_id="<dana-replyto@example.net>", extra_headers="Reply-To: mallory@example.net",
        ), mail_from="mallory@example.net")
        wait_for(lambda: all_processed(config, 6), message="the letter with a Reply-To")
    with desk_client(config) as client:
        log_in(client)
        page = client.get(f"/threads/{ids['dana']}")
        assert page.status_code == 200
        assert "This reply would go to mallory@example.net, not to dana@example.org" in html.unescape(page.text)
        other = client.get(f"/threads/{ids['sam']}")
        assert "This reply would go to" not in other.text
