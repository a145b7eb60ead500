"""The archive's schema, as an ordered list of numbered migrations.

Each migration runs once, in its own transaction, and is recorded in
``schema_migrations``; an older database is brought forward step by step when
the program opens it. Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []


def migration(version: int, name: str):
    """Register ``fn`` as schema migration number ``version``."""

    def register(fn: Migration) -> Migration:
        assert all(v != version for v, _, _ in MIGRATIONS), f"duplicate migration {version}"
        MIGRATIONS.append((version, name, fn))
        MIGRATIONS.sort(key=lambda m: m[0])
        return fn

    return register


def current_version(db: sqlite_utils.Database) -> int:
    """The highest migration number recorded in ``db`` (0 for a new file)."""
    if "schema_migrations" not in db.table_names():
        return 0
    row = db.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return row[0] or 0


def pending(db: sqlite_utils.Database) -> list[int]:
    """The migrations this program knows that ``db`` has not had yet; reads only.

    A file without ``schema_migrations`` (empty, or not an archive yet) has
    every migration pending.
    """
    if "schema_migrations" not in db.table_names():
        return [version for version, _, _ in MIGRATIONS]
    done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    return [version for version, _, _ in MIGRATIONS if version not in done]


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply every migration newer than the database; return the versions applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    # Compare against the set of applied versions, not just the highest: a
    # migration merged later with a lower number must still run.
    done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, fn in MIGRATIONS:
        if version in done:
            continue
        with db.atomic():
            fn(db)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                [version, name, dt.datetime.now(dt.timezone.utc).isoformat()],
            )
        applied.append(version)
    return applied


@migration(1, "archive: threads, messages, raw bytes, full-text index")
def _archive(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE threads (
            id INTEGER PRIMARY KEY,
            subject TEXT NOT NULL DEFAULT '',
            subject_key TEXT NOT NULL DEFAULT '',
            correspondent TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'answered', 'archived')),
            urgent INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            last_message_at TEXT NOT NULL,
            message_count INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX threads_by_subject ON threads (subject_key, correspondent);
        CREATE INDEX threads_inbox ON threads (urgent DESC, status, last_message_at DESC);

        -- One row per message, in or out. The raw bytes live in raw_messages so
        -- that listing and searching never page through attachments.
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            thread_id INTEGER NOT NULL REFERENCES threads (id),
            direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
            kind TEXT NOT NULL,
            created_at TEXT NOT NULL,
            correspondent TEXT NOT NULL DEFAULT '',
            mail_from TEXT NOT NULL DEFAULT '',
            rcpt_to TEXT NOT NULL DEFAULT '[]',
            peer TEXT NOT NULL DEFAULT '',
            message_id TEXT,
            in_reply_to TEXT,
            references_ids TEXT NOT NULL DEFAULT '[]',
            from_addr TEXT NOT NULL DEFAULT '',
            from_name TEXT NOT NULL DEFAULT '',
            to_addrs TEXT NOT NULL DEFAULT '[]',
            reply_to TEXT NOT NULL DEFAULT '',
            subject TEXT NOT NULL DEFAULT '',
            date TEXT,
            auto_submitted TEXT,
            list_id TEXT,
            precedence TEXT,
            headers TEXT NOT NULL DEFAULT '[]',
            body_text TEXT NOT NULL DEFAULT '',
            attachments TEXT NOT NULL DEFAULT '[]',
            size INTEGER NOT NULL DEFAULT 0,
            raw_sha256 TEXT NOT NULL,
            parse_error TEXT,
            processed_at TEXT,
            disposition TEXT,
            meta TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX messages_by_message_id ON messages (message_id);
        CREATE INDEX messages_by_thread ON messages (thread_id, created_at);
        CREATE INDEX messages_by_sha ON messages (raw_sha256);
        CREATE INDEX messages_by_correspondent ON messages (correspondent, kind, created_at);
        CREATE INDEX messages_unprocessed ON messages (id) WHERE processed_at IS NULL;

        CREATE TABLE raw_messages (
            id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
            raw BLOB NOT NULL
        );
        """
    )
    db["messages"].enable_fts(
        ["subject", "body_text", "from_name", "from_addr"],
        tokenize="porter unicode61 remove_diacritics 2",
        create_triggers=True,
    )


@migration(3, "outbox: outgoing messages waiting for delivery")
def _outbox(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Every outgoing message is archived in messages first; this row says
        -- where it goes and how delivery stands. delivery_key names the
        -- Maildir file, so a delivery repeated after a crash overwrites
        -- nothing and adds nothing.
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            mail_from TEXT NOT NULL DEFAULT '',
            rcpt_to TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            last_error TEXT,
            delivery_key TEXT NOT NULL UNIQUE
        );
        CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
        CREATE INDEX outbox_by_message ON outbox (message_id);
        """
    )


@migration(2, "topics: catalog and full-text index")
def _topics(db: sqlite_utils.Database) -> None:
    # The columnist's published pieces, which acknowledgements and the digest
    # link to. Rows are updated in place on re-import (never INSERT OR
    # REPLACE: that would delete the row without firing the FTS triggers).
    db.executescript(
        """
        CREATE TABLE topics (
            slug TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            url TEXT NOT NULL,
            summary TEXT NOT NULL DEFAULT '',
            keywords TEXT NOT NULL DEFAULT '[]',
            keywords_text TEXT NOT NULL DEFAULT '',
            published TEXT NOT NULL,
            starter INTEGER NOT NULL DEFAULT 0 CHECK (starter IN (0, 1)),
            body TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            imported_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX topics_by_published ON topics (published DESC);
        CREATE INDEX topics_starters ON topics (starter) WHERE starter = 1;
        """
    )
    db["topics"].enable_fts(
        ["title", "keywords_text", "summary"],
        tokenize="porter unicode61 remove_diacritics 2",
        create_triggers=True,
    )


# -- subscribers and the weekly digest ---------------------------------------
@migration(4, "subscribers, confirmation tokens, bounces, digests and their send log")
def _subscribers_and_digests(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- One row per address that ever asked for the digest. Rows are never
        -- deleted on unsubscribe: the archive's digests point at them.
        CREATE TABLE subscribers (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'confirmed', 'unsubscribed', 'suspended')),
            source TEXT NOT NULL DEFAULT '',
            thread_id INTEGER REFERENCES threads (id),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            confirmed_at TEXT,
            unsubscribed_at TEXT,
            hard_bounces INTEGER NOT NULL DEFAULT 0,
            last_bounce_at TEXT,
            note TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX subscribers_by_status ON subscribers (status, id);

        -- Confirmation tokens: only their SHA-256 is kept, never the token.
        CREATE TABLE subscription_tokens (
            token_hash TEXT PRIMARY KEY,
            subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT,
            message_id TEXT
        );
        CREATE INDEX subscription_tokens_by_subscriber ON subscription_tokens (subscriber_id, created_at);
        CREATE INDEX subscription_tokens_by_message ON subscription_tokens (message_id);

        -- Hard bounces counted against a subscriber (one per bounced message).
        CREATE TABLE subscriber_bounces (
            id INTEGER PRIMARY KEY,
            subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
            report_id INTEGER REFERENCES messages (id),
            status TEXT NOT NULL,
            original_message_id TEXT,
            created_at TEXT NOT NULL
        );
        CREATE UNIQUE INDEX subscriber_bounces_once
            ON subscriber_bounces (subscriber_id, original_message_id)
            WHERE original_message_id IS NOT NULL;

        -- One row per digest period (the idempotency key), sent or found empty.
        -- frame holds the message once, with markers where each copy differs.
        CREATE TABLE digests (
            id INTEGER PRIMARY KEY,
            period TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL CHECK (status IN ('empty', 'sending', 'sent')),
            created_at TEXT NOT NULL,
            finished_at TEXT,
            since TEXT,
            topics TEXT NOT NULL DEFAULT '[]',
            subject TEXT NOT NULL DEFAULT '',
            frame BLOB,
            markers TEXT NOT NULL DEFAULT '{}',
            -- Which process is sending it (host:pid) and until when, so two
            -- runs never send the same digest at once.
            runner TEXT,
            lease_until TEXT
        );
        CREATE INDEX digests_by_status ON digests (status, created_at);

        -- The send log: one row per digest and subscriber. 'sending' is written
        -- (and committed) just before the relay is handed the end of the message.
        CREATE TABLE digest_sends (
            digest_id INTEGER NOT NULL REFERENCES digests (id),
            subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
            status TEXT NOT NULL
                CHECK (status IN ('sending', 'sent', 'failed', 'deferred', 'skipped')),
            message_id INTEGER REFERENCES messages (id),
            attempts INTEGER NOT NULL DEFAULT 0,
            response TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (digest_id, subscriber_id)
        ) WITHOUT ROWID;
        """
    )



# -- one inbox query, fast on a big archive -----------------------------------
@migration(5, "threads: has_letter flag, indexes for the desk's inbox order, a tally per status")
def _threads_has_letter(db: sqlite_utils.Database) -> None:
    # The desk lists the threads a reader wrote in. Asking the messages table
    # per thread (EXISTS ... kind = 'letter') probed and sorted every thread
    # for each inbox page (641 ms at 158,000 threads); a flag on the thread,
    # set by the archive when a letter joins it, can lead an index instead.
    #
    # The inbox order is runs of (status, last_message_at DESC, id DESC), each
    # read backwards from an index only as far as a page needs:
    # threads_letters serves the desk's views, threads_by_status the "all"
    # view, threads_urgent the urgent runs at the top. threads_inbox (urgent
    # first) could not serve the desk's order, in which an archived urgent
    # thread is just archived.
    #
    # Every desk page shows how many threads each tab holds. Counting them on
    # an index grows with the archive (12 ms at 158,000 threads, most of it
    # the archived ones); thread_tally keeps the numbers, and triggers keep it
    # right whichever module changes a thread.
    #
    # One statement at a time, not executescript(): that would commit the
    # migration's transaction first, and a crash half way would leave the
    # column without the migration recorded.
    tally_key = "has_letter = {0}.has_letter AND status = {0}.status AND urgent = ({0}.urgent = 1)"
    for statement in (
        "ALTER TABLE threads ADD COLUMN has_letter INTEGER NOT NULL DEFAULT 0 CHECK (has_letter IN (0, 1))",
        "UPDATE threads SET has_letter = 1 WHERE EXISTS (SELECT 1 FROM messages m "
        "WHERE m.thread_id = threads.id AND m.direction = 'inbound' AND m.kind = 'letter')",
        "DROP INDEX IF EXISTS threads_inbox",
        "CREATE INDEX threads_letters ON threads (has_letter, status, last_message_at)",
        "CREATE INDEX threads_by_status ON threads (status, last_message_at)",
        "CREATE INDEX threads_urgent ON threads (status, last_message_at) WHERE urgent = 1",
        # urgent here is 1 for threads.urgent = 1 and 0 for anything else, as the desk reads it.
        "CREATE TABLE thread_tally (has_letter INTEGER NOT NULL, status TEXT NOT NULL, "
        "urgent INTEGER NOT NULL, n_threads INTEGER NOT NULL, PRIMARY KEY (has_letter, status, urgent)) WITHOUT ROWID",
        "INSERT INTO thread_tally (has_letter, status, urgent, n_threads) "
        "SELECT has_letter, status, urgent = 1, count(*) FROM threads GROUP BY 1, 2, 3",
        "CREATE TRIGGER thread_tally_insert AFTER INSERT ON threads BEGIN "
        "INSERT INTO thread_tally (has_letter, status, urgent, n_threads) "
        "VALUES (new.has_letter, new.status, new.urgent = 1, 1) "
        "ON CONFLICT DO UPDATE SET n_threads = n_threads + 1; END",
        "CREATE TRIGGER thread_tally_delete AFTER DELETE ON threads BEGIN "
        f"UPDATE thread_tally SET n_threads = n_threads - 1 WHERE {tally_key.format('old')}; END",
        "CREATE TRIGGER thread_tally_update AFTER UPDATE OF has_letter, status, urgent ON threads "
        "WHEN old.has_letter IS NOT new.has_letter OR old.status IS NOT new.status "
        "OR (old.urgent = 1) IS NOT (new.urgent = 1) BEGIN "
        f"UPDATE thread_tally SET n_threads = n_threads - 1 WHERE {tally_key.format('old')}; "
        "INSERT INTO thread_tally (has_letter, status, urgent, n_threads) "
        "VALUES (new.has_letter, new.status, new.urgent = 1, 1) "
        "ON CONFLICT DO UPDATE SET n_threads = n_threads + 1; END",
    ):
        db.execute(statement)
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
        # Statistics gathered before these indexes existed would leave the
        # planner guessing about them; the threads table is small to analyse.
        db.execute("ANALYZE threads")


# -- the columnist's urgent / not-urgent corrections ---------------------------
@migration(6, "crisis_labels: the columnist's urgent and not-urgent corrections")
def _crisis_labels(db: sqlite_utils.Database) -> None:
    # One row per correction: which letter (by its row, never a copy of its
    # text), the label, what the detector had said, who and when. The foreign
    # key is what lets `mailer forget` find these rows: erasing a reader's
    # messages takes their labels with them.
    for statement in (
        "CREATE TABLE crisis_labels ("
        " id INTEGER PRIMARY KEY,"
        " message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,"
        " label TEXT NOT NULL CHECK (label IN ('urgent', 'not-urgent')),"
        " detector_urgent INTEGER NOT NULL CHECK (detector_urgent IN (0, 1)),"
        " labelled_by TEXT NOT NULL DEFAULT '',"
        " labelled_at TEXT NOT NULL)",
        "CREATE INDEX crisis_labels_by_message ON crisis_labels (message_id, labelled_at)",
    ):
        db.execute(statement)


@migration(7, "desk_sessions: desk logins the server can end")
def _desk_sessions(db: sqlite_utils.Database) -> None:
    # A signed cookie alone cannot be taken back: a copy made before logout
    # would keep working until it expired. The cookie names a row here, and
    # logging out closes the row.
    db.execute(
        "CREATE TABLE desk_sessions (id TEXT PRIMARY KEY, opened_at TEXT NOT NULL, revoked_at TEXT) WITHOUT ROWID"
    )


@migration(8, "messages: acknowledgements by time, for the hourly cap")
def _acknowledgements_by_time(db: sqlite_utils.Database) -> None:
    # The cap counts the last hour's acknowledgements before each one; without
    # this index that count would read every outbound message.
    db.execute("CREATE INDEX messages_acknowledged ON messages (created_at) WHERE kind = 'acknowledgement'")


# -- themes and labelled letters for topic matching ---------------------------
@migration(9, "topics: themes and example letters; topic_examples: letters the columnist linked topics in")
def _topic_themes_and_examples(db: sqlite_utils.Database) -> None:
    # A topic's themes (JSON list of theme ids) as the columnist set them in
    # the catalog ('[]': derived from the topic's text), and the example
    # letters the catalog gives for it (JSON list of texts, the columnist's own).
    #
    # topic_examples is the desk's memory of its own choices: one row per
    # letter and topic the columnist linked in a reply. It holds the letter's
    # id, never its text, so forgetting the correspondent (which deletes the
    # message) takes the row with it through the foreign key.
    for statement in (
        "ALTER TABLE topics ADD COLUMN themes TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE topics ADD COLUMN examples TEXT NOT NULL DEFAULT '[]'",
        "CREATE TABLE topic_examples ("
        "message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE, "
        "slug TEXT NOT NULL, "
        "source TEXT NOT NULL DEFAULT 'reply', "
        "created_at TEXT NOT NULL, "
        "PRIMARY KEY (message_id, slug))",
        "CREATE INDEX topic_examples_by_slug ON topic_examples (slug)",
    ):
        db.execute(statement)


# -- letters received, not filed yet ------------------------------------------
@migration(10, "arrivals: letters kept byte for byte before their 250, filed by the pipeline")
def _arrivals(db: sqlite_utils.Database) -> None:
    # What the listener writes before it answers 250: the bytes, the envelope,
    # their SHA-256 and the Message-ID found by a scan of the header (no
    # parse). The pipeline parses, threads and indexes each one and moves it
    # into messages under the same id, deleting the arrival in the same
    # transaction: a letter is "received" here and "filed" there, never both.
    # Ids are shared with messages (archive.next_message_id), so the id in
    # "250 ... queued as N" is the letter's id once filed.
    db.execute(
        "CREATE TABLE arrivals ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " received_at TEXT NOT NULL,"
        " mail_from TEXT NOT NULL DEFAULT '',"
        " rcpt_to TEXT NOT NULL DEFAULT '[]',"
        " peer TEXT NOT NULL DEFAULT '',"
        " tls TEXT NOT NULL DEFAULT '',"
        " helo TEXT NOT NULL DEFAULT '',"
        " message_id TEXT,"
        " raw_sha256 TEXT NOT NULL,"
        " size INTEGER NOT NULL DEFAULT 0,"
        " raw BLOB NOT NULL)"
    )
    db.execute("CREATE INDEX arrivals_by_sha ON arrivals (raw_sha256)")


@migration(11, "messages: the full-text index follows only the indexed columns")
def _fts_update_only_indexed_columns(db: sqlite_utils.Database) -> None:
    # sqlite-utils' update trigger fired on any UPDATE of messages and
    # tokenised the whole letter again: marking a letter processed cost as
    # much as indexing it (about 1-2 ms). Only a change to an indexed column
    # needs the index touched.
    columns = '"subject", "body_text", "from_name", "from_addr"'
    old = ", ".join(f"old.{c}" for c in columns.split(", "))
    new = ", ".join(f"new.{c}" for c in columns.split(", "))
    db.execute('DROP TRIGGER IF EXISTS "messages_au"')
    db.execute(
        'CREATE TRIGGER "messages_au" AFTER UPDATE OF subject, body_text, from_name, from_addr ON "messages" BEGIN '
        f'INSERT INTO "messages_fts" ("messages_fts", rowid, {columns}) VALUES(\'delete\', old.rowid, {old}); '
        f'INSERT INTO "messages_fts" (rowid, {columns}) VALUES (new.rowid, {new}); END'
    )


# -- the column's feed, polled by itself ----------------------------------------
@migration(12, "topic_feed: the feed's validators (ETag, Last-Modified) and its last check")
def _topic_feed(db: sqlite_utils.Database) -> None:
    # One row per feed URL. The validators make the next poll a conditional
    # GET (a 304 costs the column's server nothing); error is what the last
    # failed check said, shown by `mailer status` until a check succeeds.
    db.execute(
        "CREATE TABLE topic_feed (url TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, "
        "checked_at TEXT, ok_at TEXT, error TEXT, added INTEGER NOT NULL DEFAULT 0, "
        "updated INTEGER NOT NULL DEFAULT 0)"
    )
