"""The columnist's desk from the command line: list, show, search, export, reply, mark, draft, forget.

Threads are made the real way: letters sent over SMTP to a running service,
acknowledged by it. Commands run through click's CliRunner against the same
SQLite file, and the tests look at the file, the Maildir and the exports.
"""

from __future__ import annotations

import datetime as dt
import email
import hashlib
import json
import mailbox
import sqlite3
import sys
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.store import archive
from mailer import desk, topics
from mailer.cli import main
from mailer.store.db import open_database
from mailer.app.background import BackgroundService

from conftest import REPO, import_example_topics, letter, make_config, rows, send, wait_for

DANA_LETTER = (REPO / "examples" / "letter.eml").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
DANA_MESSAGE_ID = "<20261110211407.4f2a9c@example.org>"

SAM_BODY = (
    "I can't do this anymore. I have been thinking about how to kill myself.\r\n"
    "My sister Ruth says I should write. You can call me on (555) 123-4567 or 555.987.6543,\r\n"
    "or write to me at 42 Maple Street, Apt 3B, Springfield, IL 62704.\r\n"
    "My blog is https://samquill.example/diary and my other address is sq1984@example.net.\r\n"
    "Sam Quill is not a name I am proud of today.\r\n"
    "\r\n"
    "Thanks,\r\n"
    "Sam\r\n"
)


def all_processed(config, count: int) -> bool:
    found = rows(config.storage.database,
                 "SELECT count(*) AS n, sum(processed_at IS NOT NULL) AS done FROM messages WHERE direction = 'inbound'")
    return found[0]["n"] == count and found[0]["done"] == count


def write_letters(config, running) -> dict:
    """Dana's letter (and her answer to the acknowledgement), and Sam's letter in crisis.

    Returns {"dana": thread id, "sam": thread id}.
    """
    send(running.smtp_port, DANA_LETTER, mail_from="dana@example.org")
    wait_for(lambda: all_processed(config, 1), message="Dana's letter to be acknowledged")
    ack = rows(config.storage.database, "SELECT message_id FROM messages WHERE kind = 'acknowledgement'")[0]
    send(running.smtp_port, letter(
        "Re: What is a therapist's job? I want you to answer!",
        "Thank you for the links. I read the one about cost.\r\n\r\nDana\r\n",
        message_id="<dana-2@example.org>",
        extra_headers=f"In-Reply-To: {ack['message_id']}\r\nReferences: {DANA_MESSAGE_ID} {ack['message_id']}",
    ), mail_from="dana@example.org")
    send(running.smtp_port, letter("I can't go on", SAM_BODY, sender="Sam Quill <sam.quill@example.net>",
                                   message_id="<sam-1@example.net>"), mail_from="sam.quill@example.net")
    wait_for(lambda: all_processed(config, 3), message="every letter to be processed")
    threads = {r["correspondent"]: r["id"] for r in rows(config.storage.database, "SELECT * FROM threads")}
    return {"dana": threads["dana@example.org"], "sam": threads["sam.quill@example.net"]}


def config_file_for(config, tmp_path: Path) -> Path:
    """A config file the CLI can load, pointing at the test's database and Maildir."""
    path = tmp_path / "mailer.toml"
    path.write_text(
        f'[storage]\ndatabase = "{config.storage.database}"\n'
        f'[delivery]\nmaildir = "{config.delivery.maildir}"\n'
        f'[web]\nenabled = false\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory):
    """One archive with Dana's and Sam's threads, shared by the read-only tests."""
    tmp_path = tmp_path_factory.mktemp("desk-archive")
    config = make_config(tmp_path)
    import_example_topics(config)
    with BackgroundService(config) as running:
        ids = write_letters(config, running)
    return tmp_path, config, ids


@pytest.fixture
def fresh(tmp_path):
    """A fresh archive with the same letters, for tests that change it."""
    config = make_config(tmp_path)
    import_example_topics(config)
    with BackgroundService(config) as running:
        ids = write_letters(config, running)
    return config, ids, config_file_for(config, tmp_path)


def run(config_file: Path, *args, **kwargs):
    result = CliRunner().invoke(main, ["--config", str(config_file), *args], **kwargs)
    return result


@pytest.fixture(scope="module")
def cli(archive_dir):
    tmp_path, config, ids = archive_dir
    config_file = config_file_for(config, tmp_path)
    return lambda *args, **kwargs: run(config_file, *args, **kwargs)


# -- help --------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["threads", "list"], ["threads", "show"], ["threads", "search"], ["threads", "export"],
    ["threads", "reply"], ["threads", "mark"], ["forget"], ["desk"], ["desk", "hash-password"],
    ["topics", "draft"],
], ids=lambda c: " ".join(c))
def test_every_desk_command_has_help_text(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    summary = result.output.split("\n\n")[1].strip()
    assert len(summary) > 10, result.output


def test_topics_draft_is_a_topics_command(cli, archive_dir, tmp_path):
    _, _, ids = archive_dir
    assert "draft" in main.commands["topics"].commands
    printed = cli("topics", "draft", str(ids["dana"]))
    assert printed.exit_code == 0, printed.output
    assert printed.output.startswith("---\n") and "slug: what-is-a-therapists-job-i-want-you-to-answer" in printed.output
    written = cli("topics", "draft", str(ids["dana"]), "--output", str(tmp_path / "draft.md"))
    assert written.exit_code == 0 and (tmp_path / "draft.md").read_text(encoding="utf-8") == printed.output
    assert cli("topics", "draft", "999").exit_code == 1


# -- list and show -----------------------------------------------------------------------

def test_list_puts_the_urgent_letter_first_and_filters(cli, archive_dir):
    _, _, ids = archive_dir
    listed = json.loads(cli("threads", "list", "--json").output)
    assert [t["id"] for t in listed] == [ids["sam"], ids["dana"]]
    urgent = json.loads(cli("threads", "list", "--urgent", "--json").output)
    assert [t["id"] for t in urgent] == [ids["sam"]]
    assert json.loads(cli("threads", "list", "--status", "answered", "--json").output) == []
    assert json.loads(cli("threads", "list", "--since", "2999-01-01", "--json").output) == []
    table = cli("threads", "list")
    assert table.exit_code == 0 and "URGENT" in table.output and "sam.quill@example.net" in table.output


def test_list_explains_a_bad_date(cli):
    result = cli("threads", "list", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "expected a date like 2026-11-26" in result.output


def test_show_json_has_every_message_in_order_with_the_linked_topics(cli, archive_dir):
    _, _, ids = archive_dir
    result = cli("threads", "show", str(ids["dana"]), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    kinds = [(m["direction"], m["kind"]) for m in shown["messages"]]
    assert kinds == [("inbound", "letter"), ("outbound", "acknowledgement"), ("inbound", "letter")]
    stamps = [m["created_at"] for m in shown["messages"]]
    assert stamps == sorted(stamps)
    ack = shown["messages"][1]
    assert ack["topics"] and all(t["title"] and t["url"].startswith("https://") for t in ack["topics"])
    assert shown["messages"][0]["message_id"] == DANA_MESSAGE_ID


def test_show_prints_who_wrote_what(cli, archive_dir):
    _, _, ids = archive_dir
    result = cli("threads", "show", str(ids["sam"]))
    assert result.exit_code == 0, result.output
    assert "[URGENT]" in result.output
    assert "<< #" in result.output and ">> #" in result.output
    assert "Sam Quill <sam.quill@example.net>" in result.output


def test_show_of_an_unknown_thread_is_a_clear_error(cli):
    result = cli("threads", "show", "999")
    assert result.exit_code == 1 and "no thread with id 999" in result.output


# -- search ------------------------------------------------------------------------------

def test_search_ranks_and_highlights_matches(cli, archive_dir):
    _, _, ids = archive_dir
    result = cli("threads", "search", "therapist")
    assert result.exit_code == 0, result.output
    assert "[therapist]" in result.output or "[therapists]" in result.output
    hits = json.loads(cli("threads", "search", "therapist", "--json").output)
    assert hits and hits[0]["thread_id"] == ids["dana"]
    assert all("[" in h["snippet"] + h["subject_highlighted"] for h in hits)
    assert [h["rank"] for h in hits] == sorted(h["rank"] for h in hits)


def test_search_for_an_address_searches_it_literally(cli, archive_dir):
    _, _, ids = archive_dir
    result = cli("threads", "search", "sam.quill@example.net", "--json")
    assert result.exit_code == 0, result.output
    assert {h["thread_id"] for h in json.loads(result.output)} == {ids["sam"]}


@pytest.mark.parametrize("query, explanation", [
    ('"unclosed phrase', "a double quote is not closed"),
    ("money AND (help", "the brackets do not pair up"),
    ("money AND", "AND, OR and NOT need a word on both sides"),
], ids=["open-quote", "open-bracket", "dangling-and"])
def test_search_syntax_errors_are_explained_not_thrown(cli, query, explanation):
    result = cli("threads", "search", query)
    assert result.exit_code == 1
    assert explanation in result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


# -- export ------------------------------------------------------------------------------

def test_export_writes_the_original_bytes_as_mbox_and_eml(cli, archive_dir, tmp_path):
    _, config, ids = archive_dir
    raws = [bytes(r["raw"]) for r in rows(
        config.storage.database,
        "SELECT r.raw FROM raw_messages r JOIN messages m ON m.id = r.id WHERE m.thread_id = ? "
        "ORDER BY m.created_at, m.id", [ids["dana"]])]
    assert len(raws) == 3
    result = cli("threads", "export", str(ids["dana"]), "--mbox", str(tmp_path / "t.mbox"),
                 "--eml", str(tmp_path / "eml"))
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "eml").iterdir())
    assert [f.read_bytes() for f in files] == raws
    assert files[0].name.startswith("001-inbound-letter-")
    box = mailbox.mbox(str(tmp_path / "t.mbox"))
    exported = [box.get_bytes(key) for key in box.keys()]
    assert exported == raws  # no body line starts with "From ", so nothing was quoted
    assert box[box.keys()[0]].get_from().startswith("dana@example.org ")
    assert email.message_from_bytes(exported[0], policy=policy.default)["Message-ID"] == DANA_MESSAGE_ID

    again = cli("threads", "export", str(ids["dana"]), "--mbox", str(tmp_path / "t.mbox"))
    assert again.exit_code == 1 and "already exists" in again.output


def test_export_needs_a_destination(cli, archive_dir):
    _, _, ids = archive_dir
    result = cli("threads", "export", str(ids["dana"]))
    assert result.exit_code == 2 and "--mbox FILE or --eml DIR" in result.output


# -- reply and mark ----------------------------------------------------------------------

def maildir_messages(config) -> list[email.message.EmailMessage]:
    new = Path(config.delivery.maildir) / "new"
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(new.iterdir())]


def test_reply_from_a_file_is_threaded_signed_delivered_and_answers_the_thread(fresh, tmp_path):
    config, ids, config_file = fresh
    text = tmp_path / "reply.txt"
    text.write_text("Dear Dana,\n\nA therapist's job is to help you change something.\n\nWarmly,\n", encoding="utf-8")
    with BackgroundService(config) as running:
        result = run(config_file, "threads", "reply", str(ids["dana"]), "--file", str(text))
        assert result.exit_code == 0, result.output
        assert "Reply to dana@example.org queued" in result.output
        running.service.outbox.wake()
        replies = wait_for(lambda: [m for m in maildir_messages(config) if m["In-Reply-To"] == "<dana-2@example.org>"],
                           message="the reply in the Maildir")
    sent = replies[0]
    assert sent["To"].addresses[0].addr_spec == "dana@example.org"
    assert sent["Subject"] == "Re: What is a therapist's job? I want you to answer!"
    assert "<dana-2@example.org>" in sent["References"] and DANA_MESSAGE_ID in sent["References"]
    assert sent["Auto-Submitted"] is None
    body = sent.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body.startswith("Dear Dana,\n\nA therapist's job is to help you change something.")
    assert "\n-- \nThe Columnist\nEnjoy Your Changes" in body
    assert "> Thank you for the links." in body
    assert sent.get_body(("html",)) is not None
    thread = rows(config.storage.database, "SELECT * FROM threads WHERE id = ?", [ids["dana"]])[0]
    assert thread["status"] == "answered"
    archived = rows(config.storage.database, "SELECT * FROM messages WHERE kind = 'reply'")
    assert len(archived) == 1 and archived[0]["thread_id"] == ids["dana"]
    assert rows(config.storage.database, "SELECT status FROM outbox WHERE message_id = ?",
                [archived[0]["id"]])[0]["status"] == "sent"


def test_a_reply_linking_topics_labels_the_letter_and_forget_erases_the_label(fresh, tmp_path):
    config, ids, config_file = fresh
    db_path = config.storage.database
    text = tmp_path / "reply.txt"
    text.write_text(
        "Dear Dana,\n\nStart with https://column.example/topics/what-is-a-therapists-job and, when you\n"
        "are ready, column.example/topics/finding-a-good-therapist/.\n\nWarmly,\n", encoding="utf-8")

    result = run(config_file, "threads", "reply", str(ids["dana"]), "--file", str(text))

    assert result.exit_code == 0, result.output
    letter_id = rows(db_path, "SELECT id FROM messages WHERE message_id = '<dana-2@example.org>'")[0]["id"]
    labels = rows(db_path, "SELECT message_id, slug FROM topic_examples ORDER BY slug")
    assert [(r["message_id"], r["slug"]) for r in labels] == [
        (letter_id, "finding-a-good-therapist"), (letter_id, "what-is-a-therapists-job")]
    assert set(rows(db_path, "SELECT * FROM topic_examples")[0].keys()) == {"message_id", "slug", "source", "created_at"}

    forgotten = run(config_file, "forget", "dana@example.org", "--yes")

    assert forgotten.exit_code == 0, forgotten.output
    assert rows(db_path, "SELECT * FROM topic_examples") == []


def test_the_acknowledgement_of_a_letter_in_crisis_links_topics_on_distress_not_starters(archive_dir):
    _, config, ids = archive_dir
    ack = rows(config.storage.database,
               "SELECT meta FROM messages WHERE kind = 'acknowledgement' AND thread_id = ?", [ids["sam"]])[0]
    meta = json.loads(ack["meta"])
    db = open_database(config.storage.database)
    themed = topics.topic_themes(db)
    db.close()

    assert len(meta["topics"]) == 3
    assert not set(meta["topics"]) & {"start-here-how-this-column-works", "self-therapy-first-steps",
                                      "enjoy-your-changes-keeping-progress"}
    assert meta["topics"][0] == "depression-and-low-mood"
    assert sum(bool(set(themed[slug]) & set(topics.URGENT_THEMES)) for slug in meta["topics"]) >= 2


def test_reply_written_in_the_editor(fresh, tmp_path):
    config, ids, config_file = fresh
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys\n"
        "path = sys.argv[-1]\n"
        "text = open(path, encoding='utf-8').read()\n"
        "assert '# > I can' in text, text\n"
        "open(path, 'w', encoding='utf-8').write('Dear Sam,\\n\\nPlease call 988 tonight.\\n' + text.split('\\n', 1)[1])\n",
        encoding="utf-8",
    )
    result = run(config_file, "threads", "reply", str(ids["sam"]), input="y\n",
                 env={"EDITOR": f"{sys.executable} {editor}", "VISUAL": ""})
    assert result.exit_code == 0, result.output
    assert "Send this reply to sam.quill@example.net?" in result.output
    reply = rows(config.storage.database, "SELECT body_text FROM messages WHERE kind = 'reply'")[0]
    assert reply["body_text"].startswith("Dear Sam,\n\nPlease call 988 tonight.\n\n-- \n")
    assert "------------------------ >8" not in reply["body_text"]
    assert rows(config.storage.database, "SELECT status FROM threads WHERE id = ?", [ids["sam"]])[0]["status"] == "answered"


def test_an_empty_reply_sends_nothing(fresh, tmp_path):
    config, ids, config_file = fresh
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    result = run(config_file, "threads", "reply", str(ids["dana"]), "--file", str(empty))
    assert result.exit_code == 1 and "the reply is empty" in result.output
    assert rows(config.storage.database, "SELECT count(*) AS n FROM outbox WHERE kind = 'reply'")[0]["n"] == 0


def test_mark_sets_the_status(fresh):
    config, ids, config_file = fresh
    result = run(config_file, "threads", "mark", str(ids["sam"]), "archived")
    assert result.exit_code == 0 and "now archived" in result.output
    assert rows(config.storage.database, "SELECT status FROM threads WHERE id = ?", [ids["sam"]])[0]["status"] == "archived"
    assert run(config_file, "threads", "mark", "999", "new").exit_code == 1
    assert run(config_file, "threads", "mark", str(ids["sam"]), "done").exit_code == 2


# -- topic drafts ------------------------------------------------------------------------

def test_topic_draft_removes_the_readers_identifying_details(archive_dir, tmp_path):
    _, config, ids = archive_dir
    db = open_database(config.storage.database)
    try:
        draft = desk.topic_draft(db, ids["sam"], config=config, clock=lambda: dt.datetime(2026, 11, 26, 12, tzinfo=dt.timezone.utc))
    finally:
        db.close()
    for secret in ("Sam", "Quill", "sam.quill", "sq1984", "555", "123-4567", "987", "42 Maple", "Apt 3B",
                   "62704", "samquill.example", "Springfield"):
        assert secret.lower() not in draft.lower(), f"{secret!r} is still in the draft:\n{draft}"
    assert "[phone]" in draft and "[address]" in draft and "[email]" in draft and "[link]" in draft and "[name]" in draft
    assert "thinking about how to kill myself" in draft  # the letter itself stays
    assert "My sister Ruth" in draft  # other people's names cannot be guessed; the columnist checks

    # Once the columnist writes a summary, `mailer topics import` reads it.
    path = tmp_path / "draft.md"
    path.write_text(draft.replace("summary: \n", "summary: When a reader cannot go on.\n"), encoding="utf-8")
    topic, problems = topics.load_catalog(path)
    assert problems == [] and topic[0].slug == "i-cant-go-on" and topic[0].published == "2026-11-26"
    # ...but not before: the empty summary stops an unread draft.
    path.write_text(draft, encoding="utf-8")
    assert any("summary" in p for p in topics.load_catalog(path)[1])


@pytest.mark.parametrize("text, names, expected", [
    ("Write to jo@example.com today", [], "Write to [email] today"),
    ("Call +1 (555) 010-9999 now", [], "Call [phone] now"),
    ("We met 2019-2023 and on 2024-03-05.", [], "We met 2019-2023 and on 2024-03-05."),
    ("I live at 17 Rue Road, Leeds LS1 4AB.", [], "I live at [address], Leeds [address]."),
    ("PO Box 77, Austin", [], "[address], Austin"),
    ("Hi, I'm Dana. DANA is tired.", ["Dana Reader"], "Hi, I'm [name]. [name] is tired."),
    ("My name is Lee Park and I", [], "My name is [name] and I"),
    ("bye\n- Jo", [], "bye\n- [name]"),
    ("> quoted Dana\nmine", ["Dana"], "mine"),
], ids=["email", "phone", "dates-are-not-phones", "street-and-postcode", "po-box", "from-name-anywhere",
        "my-name-is", "dash-signature", "quotes-dropped"])
def test_anonymize(text, names, expected):
    assert desk.anonymize(text, names) == expected


def test_digest_copies_stay_out_of_the_inbox_but_export_with_their_bytes(fresh, tmp_path):
    config, ids, config_file = fresh
    if not subscribe_and_send_a_digest(config, config_file):
        pytest.skip("no subscribers and digest commands yet")
    listed = {t["id"] for t in json.loads(run(config_file, "threads", "list", "--json").output)}
    assert listed == {ids["dana"], ids["sam"]}
    everything = json.loads(run(config_file, "threads", "list", "--all", "--json").output)
    digest_threads = {t["id"] for t in everything} - listed
    assert digest_threads
    copy = rows(config.storage.database, "SELECT id, thread_id, raw_sha256 FROM messages WHERE kind = 'digest'")[0]
    result = run(config_file, "threads", "export", str(copy["thread_id"]), "--eml", str(tmp_path / "digest"))
    assert result.exit_code == 0, result.output
    exported = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "digest").iterdir()}
    assert copy["raw_sha256"] in exported


# -- someone else's thread ------------------------------------------------------------------

def test_a_strangers_letter_in_reply_to_a_readers_message_starts_its_own_thread(fresh):
    config, ids, config_file = fresh
    ack = rows(config.storage.database, "SELECT message_id FROM messages WHERE kind = 'acknowledgement' "
               "AND thread_id = ? ORDER BY id LIMIT 1", [ids["dana"]])[0]["message_id"]
    with BackgroundService(config) as running:
        send(running.smtp_port, letter(
            "Re: your letter", "I am Dana, really. Send the answer to me.\r\n",
            sender="Mallory <mallory@example.net>", message_id="<mallory-1@example.net>",
            extra_headers=f"In-Reply-To: {ack}\r\nReferences: {DANA_MESSAGE_ID} {ack}",
        ), mail_from="mallory@example.net")
        wait_for(lambda: all_processed(config, 4), message="Mallory's letter")
    found = rows(config.storage.database, "SELECT thread_id FROM messages WHERE message_id = '<mallory-1@example.net>'")
    assert found[0]["thread_id"] != ids["dana"]
    assert rows(config.storage.database, "SELECT correspondent FROM threads WHERE id = ?",
                [found[0]["thread_id"]])[0]["correspondent"] == "mallory@example.net"


def test_the_desk_warns_when_a_reply_would_go_to_someone_other_than_the_threads_reader(fresh, tmp_path):
    config, ids, config_file = fresh
    with BackgroundService(config) as running:
        send(running.smtp_port, letter(
            "Re: What is a therapist's job? I want you to answer!", "Please write back.\r\n",
            sender="Dana <dana@example.org>", message_id="<dana-forged@example.net>",
            extra_headers=f"In-Reply-To: {DANA_MESSAGE_ID}\r\nReply-To: mallory@example.net",
        ), mail_from="mallory@example.net")
        wait_for(lambda: all_processed(config, 4), message="the letter with a Reply-To")
    reply_file = tmp_path / "reply.txt"
    reply_file.write_text("Dear Dana,\n\nThank you.\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config_file), "threads", "reply", str(ids["dana"]),
                                       "--file", str(reply_file)])
    assert result.exit_code == 0, result.output
    assert "Warning: This reply would go to mallory@example.net, not to dana@example.org" in result.output
    detail_db = open_database(config.storage.database)
    try:
        assert "mallory@example.net" in desk.thread_detail(detail_db, ids["dana"])["reply_warning"]
    finally:
        detail_db.close()


# -- forget ------------------------------------------------------------------------------

def every_row_mentioning(db_path: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(table, column) of every cell in every table, shadow tables included, that holds a needle."""
    conn = sqlite3.connect(db_path)
    hits = []
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            try:
                cursor = conn.execute(f"SELECT * FROM [{table}]")
            except sqlite3.OperationalError:
                continue
            names = [d[0] for d in cursor.description]
            for row in cursor:
                for name, value in zip(names, row):
                    if isinstance(value, (bytes, memoryview)):
                        value = bytes(value).decode("utf-8", "replace")
                    if isinstance(value, str) and any(n in value.lower() for n in needles):
                        hits.append((table, name))
        # The FTS index itself: no token of the address may remain.
        conn.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, messages_fts, 'row')")
        for (term,) in conn.execute("SELECT term FROM temp.vocab"):
            if any(term == n or term.startswith(n) for n in ("quill", "sq1984")):
                hits.append(("messages_fts (index)", term))
        matched = conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'quill'").fetchall()
        hits += [("messages_fts (match)", str(r[0])) for r in matched]
    finally:
        conn.close()
    return hits


def add_reader_notes(config) -> None:
    """A table forget has never heard of, with an address column and a child table."""
    conn = sqlite3.connect(config.storage.database)
    conn.executescript(
        """
        CREATE TABLE reader_notes (id INTEGER PRIMARY KEY, reader_email TEXT NOT NULL, note TEXT NOT NULL);
        CREATE TABLE reader_note_tags (note_id INTEGER NOT NULL REFERENCES reader_notes (id), tag TEXT NOT NULL);
        INSERT INTO reader_notes (reader_email, note) VALUES ('Sam.Quill@example.net', 'wrote twice'),
            ('dana@example.org', 'asked about therapy');
        INSERT INTO reader_note_tags (note_id, tag) VALUES (1, 'crisis'), (2, 'therapy');
        """
    )
    conn.commit()
    conn.close()


def subscribe_and_send_a_digest(config, config_file) -> bool:
    """Sam and Dana subscribe and get a digest, through the subscribers' own commands (if present)."""
    if "subscribers" not in main.commands or "digest" not in main.commands:
        return False
    for address in ("sam.quill@example.net", "dana@example.org"):
        added = run(config_file, "subscribers", "add", address, "--confirmed")
        assert added.exit_code == 0, added.output
    db = open_database(config.storage.database)
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    topics.import_topics(db, [topics.Topic("fresh-piece", "A fresh piece", "https://column.example/topics/fresh",
                                           "New this week.", ("new",), today)],
                         clock=lambda: dt.datetime.now(dt.timezone.utc))
    db.close()
    sent = run(config_file, "digest", "send", "--quiet")
    assert sent.exit_code == 0, sent.output
    return True


def test_forget_leaves_no_row_of_the_address_in_any_table(fresh):
    config, ids, config_file = fresh
    add_reader_notes(config)
    subscribed = subscribe_and_send_a_digest(config, config_file)
    db_path = config.storage.database
    needles = ["sam.quill@example.net", "quill"]
    assert every_row_mentioning(db_path, needles), "the test must start with Sam in the archive"
    dana_before = rows(db_path, "SELECT count(*) AS n FROM messages WHERE thread_id = ?", [ids["dana"]])[0]["n"]

    result = run(config_file, "forget", "Sam.Quill@Example.NET", "--yes")
    assert result.exit_code == 0, result.output
    assert "Removed, for sam.quill@example.net:" in result.output
    assert "reader_notes" in result.output and "reader_note_tags" in result.output
    if subscribed:
        assert "subscribers" in result.output and "digest_sends" in result.output

    assert every_row_mentioning(db_path, needles) == []
    assert rows(db_path, "SELECT * FROM threads WHERE id = ?", [ids["sam"]]) == []
    assert rows(db_path, "SELECT count(*) AS n FROM messages WHERE thread_id = ?", [ids["dana"]])[0]["n"] == dana_before
    assert [r["reader_email"] for r in rows(db_path, "SELECT * FROM reader_notes")] == ["dana@example.org"]
    assert [r["tag"] for r in rows(db_path, "SELECT * FROM reader_note_tags")] == ["therapy"]
    if subscribed:
        assert [r["email"] for r in rows(db_path, "SELECT email FROM subscribers")] == ["dana@example.org"]
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")  # raises if the index is off
    conn.close()
    # Dana's letters are still found; Sam's are not.
    assert json.loads(run(config_file, "threads", "search", "therapist", "--json").output)
    assert json.loads(run(config_file, "threads", "search", "kill", "--json").output) == []
    # Not even in the file's free pages or the WAL.
    for path in Path(db_path).parent.glob(Path(db_path).name + "*"):
        assert b"sam.quill@example.net" not in path.read_bytes().lower(), path


def test_forget_says_the_erasure_is_incomplete_while_a_reader_holds_a_snapshot(fresh):
    config, ids, config_file = fresh
    db_path = Path(config.storage.database)
    reader = sqlite3.connect(db_path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()  # holds its snapshot until rollback
    try:
        result = run(config_file, "forget", "sam.quill@example.net", "--yes", "--wait", "0.3")
        assert result.exit_code == 1, result.output
        assert "the erasure is incomplete" in result.output
        assert "run the same `mailer forget` command again" in result.output
        files = [p.read_bytes().lower() for p in db_path.parent.glob(db_path.name + "*")]
        assert any(b"sam.quill@example.net" in f for f in files), "the premise: Sam's words are still on disk"
    finally:
        reader.rollback()
        reader.close()
    again = run(config_file, "forget", "sam.quill@example.net", "--yes", "--wait", "5")
    assert again.exit_code == 0, again.output
    assert "Nothing in the archive belongs to sam.quill@example.net" in again.output
    for path in db_path.parent.glob(db_path.name + "*"):
        assert b"sam.quill@example.net" not in path.read_bytes().lower(), path


def test_forget_asks_first_and_can_be_declined(fresh):
    config, ids, config_file = fresh
    result = run(config_file, "forget", "sam.quill@example.net", input="n\n")
    assert result.exit_code == 1
    assert "This will permanently erase, for sam.quill@example.net:" in result.output
    assert "messages" in result.output
    assert rows(config.storage.database, "SELECT count(*) AS n FROM threads WHERE id = ?", [ids["sam"]])[0]["n"] == 1


def test_forget_dry_run_changes_nothing(fresh):
    config, ids, config_file = fresh
    before = rows(config.storage.database, "SELECT count(*) AS n FROM messages")[0]["n"]
    result = run(config_file, "forget", "dana@example.org", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dry_run"] and report["removed"]["messages"] == 3 and report["removed"]["threads"] == 1
    assert rows(config.storage.database, "SELECT count(*) AS n FROM messages")[0]["n"] == before


def test_forget_of_a_stranger_or_the_column_itself(fresh):
    config, ids, config_file = fresh
    nobody = run(config_file, "forget", "nobody@example.com", "--yes")
    assert nobody.exit_code == 0 and "Nothing in the archive belongs to nobody@example.com" in nobody.output
    own = run(config_file, "forget", "letters@column.example", "--yes")
    assert own.exit_code == 1 and "column's own addresses" in own.output
    assert run(config_file, "forget", "not-an-address", "--yes").exit_code == 1


def test_forget_reports_mentions_in_other_peoples_letters(fresh):
    config, ids, config_file = fresh
    with BackgroundService(config) as running:
        send(running.smtp_port, letter("About my friend", "My friend sam.quill@example.net told me to write.\r\n",
                                       sender="Kim <kim@example.com>"), mail_from="kim@example.com")
        wait_for(lambda: all_processed(config, 4), message="Kim's letter")
    kim = rows(config.storage.database, "SELECT id FROM threads WHERE correspondent = 'kim@example.com'")[0]["id"]
    result = run(config_file, "forget", "sam.quill@example.net", "--yes")
    assert result.exit_code == 0, result.output
    assert "Still mentioned in the text of other people's rows" in result.output
    assert f"messages: thread(s) {kim}" in result.output


# -- the desk password ---------------------------------------------------------------------

def test_hash_password_makes_a_hash_the_desk_accepts():
    result = CliRunner().invoke(main, ["desk", "hash-password", "--stdin"], input="correct horse battery\n")
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith('password_hash = "scrypt$')
    stored = line.split('"')[1]
    assert desk.verify_password("correct horse battery", stored)
    assert not desk.verify_password("correct horse batter", stored)
    short = CliRunner().invoke(main, ["desk", "hash-password", "--stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 8 characters" in short.output


@pytest.mark.parametrize("bad", ["", "plain-text-password", "scrypt$3$8$1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5",
                                 "scrypt$16384$8$1$!!$??"], ids=["empty", "not-a-hash", "n-not-power-of-two", "bad-base64"])
def test_a_damaged_password_hash_is_reported(bad):
    with pytest.raises(desk.PasswordHashError):
        desk.parse_password_hash(bad)


# -- the documentation -------------------------------------------------------------------------

def test_the_desk_documentation_covers_every_command_and_the_real_policy():
    from mailer.web.guard import CONTENT_SECURITY_POLICY

    text = (REPO / "docs" / "desk.md").read_text(encoding="utf-8")
    for name in main.commands["threads"].commands:
        assert f"mailer threads {name}" in text, name
    for command in ("mailer forget", "mailer desk hash-password", "mailer topics draft"):
        assert command in text, command
    flat = " ".join(text.replace("`", "").split())
    assert CONTENT_SECURITY_POLICY in flat
    assert f"N={desk.SCRYPT_N}, r={desk.SCRYPT_R}, p={desk.SCRYPT_P}" in flat
    assert f"more than {archive.RANK_NEWEST:,} messages shows the best matches among the newest" in flat
