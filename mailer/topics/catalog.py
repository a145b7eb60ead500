"""The column's published topics: importing the catalog and matching letters to it.

A topic is one published piece (slug, title, URL, summary, keywords, date).
The catalog comes from a TOML file of ``[[topic]]`` tables, from Markdown
files with a small front matter block, or from the column's RSS/Atom feed;
importing any of them again updates the same rows in place.

Matching ranks topics against a letter with SQLite FTS5's bm25 over title,
keywords and summary (see docs/relevance.md for how it was tuned and how
well it does). When nothing fits, the acknowledgement links the column's
*starter* topics rather than whatever scored least badly.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import tomllib
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import weakref
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import sqlite_utils

from .clock import Clock, iso
from .parsing import html_to_text

#: File suffixes read as each kind of catalog.
TOML_SUFFIXES = (".toml",)
MARKDOWN_SUFFIXES = (".md", ".markdown")
FEED_SUFFIXES = (".xml", ".rss", ".atom")

#: How long to wait for a feed served over HTTP.
FEED_TIMEOUT_SECONDS = 30
FEED_MAX_BYTES = 20 * 1024 * 1024

#: A topic needs at least this score to be linked as a match; below it the
#: letter gets the starters (calibrated on the bench, see docs/relevance.md).
MIN_SCORE = 1.5
#: A word in the subject counts this much more than one use in the body.
SUBJECT_WEIGHT = 2.0
#: The column's word for what a reader describes counts this much of the reader's word.
SYNONYM_WEIGHT = 1.0
#: bm25 column weights: title, keywords, summary.
COLUMN_WEIGHTS = (3.0, 4.0, 1.0)
#: A starter topic's score is multiplied by this before it competes as a match.
STARTER_WEIGHT = 0.6
#: At most this many distinct terms of a letter go into the query ...
MAX_QUERY_TERMS = 24
#: ... and a heavy term is repeated at most this often.
MAX_REPEAT = 3
#: At most this many topic rows (summed over the chosen terms) for bm25 to
#: score: that, not the size of the catalog, is what a match costs.
MAX_POSTINGS = 600
#: Only the first this-many characters of a letter are read.
MAX_LETTER_CHARS = 20_000
_STARTER_SLACK = 8
_BM25_K1 = 1.2  # FTS5's constant

_REQUIRED = ("slug", "title", "url", "summary", "keywords", "published")
_OPTIONAL = ("starter", "body")
_KNOWN = _REQUIRED + _OPTIONAL
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_TOPIC_COLUMNS = ("slug", "title", "url", "summary", "keywords", "published",
                  "starter", "source", "imported_at", "updated_at")


class TopicImportError(Exception):
    """A catalog, Markdown folder or feed that cannot be read at all."""


@dataclass(frozen=True)
class Topic:
    """One published piece of the column, as a catalog describes it."""

    slug: str
    title: str
    url: str
    summary: str
    keywords: tuple[str, ...]
    published: str  # ISO date "YYYY-MM-DD"
    starter: bool = False
    body: str = ""


@dataclass(frozen=True)
class TopicMatch:
    """A topic offered for a letter, with how well it fits (higher is better)."""

    slug: str
    title: str
    url: str
    summary: str
    score: float
    starter: bool


# --------------------------------------------------------------------------
# Reading catalogs


def is_feed(source: str | Path) -> bool:
    """Whether ``source`` is read as an RSS/Atom feed (a URL or a .xml/.rss/.atom file)."""
    text = str(source)
    if re.match(r"^https?://", text, re.IGNORECASE):
        return True
    return Path(text).suffix.lower() in FEED_SUFFIXES


def load_catalog(source: str | Path) -> tuple[list[Topic], list[str]]:
    """Read topics from a TOML catalog, Markdown file or folder, or RSS/Atom feed.

    Returns the good topics and one readable line per bad entry; a bad entry
    never hides the good ones. Raises TopicImportError when the source as a
    whole cannot be read (missing file, broken TOML, not a feed).
    """
    text = str(source)
    if re.match(r"^https?://", text, re.IGNORECASE):
        return _load_feed(text, _fetch(text))
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in MARKDOWN_SUFFIXES)
        if not files:
            raise TopicImportError(f"{path}: no Markdown files (*.md) in this folder")
        found, problems = [], []
        for file in files:
            topic, file_problems = _load_markdown(file)
            if topic:
                found.append((topic, str(file), file.name))
            problems.extend(file_problems)
        return _drop_duplicates(found, problems)
    if not path.is_file():
        raise TopicImportError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in TOML_SUFFIXES:
        return _load_toml(path)
    if suffix in MARKDOWN_SUFFIXES:
        topic, problems = _load_markdown(path)
        return ([topic] if topic else []), problems
    if suffix in FEED_SUFFIXES:
        return _load_feed(str(path), _read_bytes(path))
    raise TopicImportError(
        f"{path}: cannot tell what kind of catalog this is; use a .toml catalog, a .md file "
        "or folder of them, or an RSS/Atom feed (.xml, .rss, .atom or an http(s) URL)"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TopicImportError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TopicImportError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _load_toml(path: Path) -> tuple[list[Topic], list[str]]:
    try:
        data = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise TopicImportError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("topic")
    if entries is None:
        raise TopicImportError(f"{path}: no [[topic]] tables found")
    if not isinstance(entries, list):
        raise TopicImportError(f"{path}: 'topic' must be an array of tables, written [[topic]]")
    found: list[tuple[Topic, str, str]] = []
    problems: list[str] = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: topic {number}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a [[topic]] table")
            continue
        if isinstance(entry.get("slug"), str) and entry["slug"].strip():
            where += f" (slug {entry['slug'].strip()!r})"
        topic, entry_problems = _topic_from_mapping(entry, where)
        problems.extend(entry_problems)
        if topic:
            found.append((topic, where, f"topic {number}"))
    return _drop_duplicates(found, problems)


def _load_markdown(path: Path) -> tuple[Topic | None, list[str]]:
    """One topic from a Markdown file whose front matter holds the fields."""
    try:
        text = _read_text(path)
    except TopicImportError as exc:
        return None, [str(exc)]
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None, [f"{path}: no front matter (a block between '---' lines at the top)"]
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return None, [f"{path}: the front matter is not closed with a '---' line"]
    data: dict = {}
    problems: list[str] = []
    for number in range(1, end):
        line = lines[number]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, colon, value = line.partition(":")
        key = key.strip()
        if not colon or not key or " " in key:
            problems.append(f"{path}: line {number + 1}: expected 'key: value', got {line.strip()!r}")
            continue
        if key in data:
            problems.append(f"{path}: line {number + 1}: key {key!r} given twice")
            continue
        data[key] = _front_matter_value(value.strip())
    if problems:
        return None, problems
    if "body" not in data:
        data["body"] = "\n".join(lines[end + 1:]).strip()
    where = f"{path}"
    if isinstance(data.get("slug"), str) and data["slug"]:
        where += f" (slug {data['slug']!r})"
    return _topic_from_mapping(data, where)


def _front_matter_value(value: str):
    """A front matter value: [a, b] is a list, true/false a bool, quotes are removed."""
    if value.startswith("[") and value.endswith("]"):
        inner = value[1:-1].strip()
        return [_unquote(item.strip()) for item in inner.split(",")] if inner else []
    if value in ("true", "false"):
        return value == "true"
    return _unquote(value)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "mailer-topics/1 (+feed import)"})
    try:
        with urllib.request.urlopen(request, timeout=FEED_TIMEOUT_SECONDS) as response:
            data = response.read(FEED_MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise TopicImportError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TopicImportError(f"{url}: cannot fetch the feed: {reason}") from None
    if len(data) > FEED_MAX_BYTES:
        raise TopicImportError(f"{url}: the feed is larger than {FEED_MAX_BYTES} bytes")
    return data


def _load_feed(source: str, data: bytes) -> tuple[list[Topic], list[str]]:
    import feedparser  # imported here: only feed imports need it

    parsed = feedparser.parse(data)
    if not parsed.get("version") and not parsed.entries:
        reason = parsed.get("bozo_exception")
        raise TopicImportError(
            f"{source}: not a readable RSS or Atom feed" + (f" ({reason})" if reason else "")
        )
    found: list[tuple[Topic, str, str]] = []
    problems: list[str] = []
    for number, entry in enumerate(parsed.entries, start=1):
        title = html_to_text(entry.get("title") or "")
        where = f"{source}: entry {number}" + (f" ({title!r})" if title else "")
        link = entry.get("link") or ""
        slug = _slug_from_link(link)
        summary = entry.get("summary") or ""
        if not summary and entry.get("content"):
            summary = entry["content"][0].get("value", "")
        moment = entry.get("published_parsed") or entry.get("updated_parsed")
        keywords = []
        for tag in entry.get("tags") or []:
            term = " ".join((tag.get("term") or tag.get("label") or "").split())
            if term and term not in keywords:
                keywords.append(term)
        data_ = {
            "slug": slug, "title": title, "url": link,
            "summary": html_to_text(summary), "keywords": keywords,
            "published": dt.date(*moment[:3]).isoformat() if moment else None,
        }
        entry_problems = []
        if not link:
            entry_problems.append(f"{where}: no <link>, so no URL or slug")
        elif not slug:
            entry_problems.append(f"{where}: cannot take a slug from the link {link!r}")
        if not moment:
            entry_problems.append(f"{where}: no published or updated date")
        if entry_problems:
            problems.extend(entry_problems)
            continue
        if slug:
            where += f" (slug {slug!r})"
        topic, entry_problems = _topic_from_mapping(data_, where)
        problems.extend(entry_problems)
        if topic:
            found.append((topic, where, f"entry {number}"))
    return _drop_duplicates(found, problems)


def _slug_from_link(link: str) -> str:
    """The last path segment of a link, without .html: /topics/grief.html -> grief."""
    path = urllib.parse.urlsplit(link).path.rstrip("/")
    segment = urllib.parse.unquote(path.rsplit("/", 1)[-1]) if path else ""
    return re.sub(r"\.(html?|php|aspx?)$", "", segment, flags=re.IGNORECASE)


def _topic_from_mapping(data: dict, where: str) -> tuple[Topic | None, list[str]]:
    """Validate one entry; the problems name ``where`` and the key at fault."""
    problems = []
    for key in data:
        if key not in _KNOWN:
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(_KNOWN)})")
    for key in _REQUIRED:
        if data.get(key) is None:
            problems.append(f"{where}: missing key {key!r}")
    values = {}
    for key in ("slug", "title", "url", "summary"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: key {key!r}: expected non-empty text, got {value!r}")
            continue
        values[key] = " ".join(value.split())
    if "slug" in values and not _SLUG.match(values["slug"]):
        problems.append(
            f"{where}: key 'slug': {values['slug']!r} is not a slug "
            "(letters, digits, '-', '.', '_' and '~'; no spaces or '/')"
        )
    if "url" in values and not re.match(r"^https?://[^\s/]+", values["url"], re.IGNORECASE):
        problems.append(f"{where}: key 'url': expected an http(s) address, got {values['url']!r}")
    keywords = data.get("keywords")
    if keywords is not None:
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            problems.append(f"{where}: key 'keywords': expected a list of words, got {keywords!r}")
        else:
            cleaned = []
            for keyword in keywords:
                keyword = " ".join(keyword.split())
                if keyword and keyword not in cleaned:
                    cleaned.append(keyword)
            values["keywords"] = tuple(cleaned)
    published = data.get("published")
    if published is not None:
        date = _as_date(published)
        if date is None:
            problems.append(
                f"{where}: key 'published': expected a date like 2025-01-06, got {published!r}"
            )
        values["published"] = date
    starter = data.get("starter", False)
    if not isinstance(starter, bool):
        problems.append(f"{where}: key 'starter': expected true or false, got {starter!r}")
    body = data.get("body", "")
    if not isinstance(body, str):
        problems.append(f"{where}: key 'body': expected text, got a {type(body).__name__}")
    if problems:
        return None, problems
    return Topic(
        slug=values["slug"], title=values["title"], url=values["url"],
        summary=values["summary"], keywords=values["keywords"], published=values["published"],
        starter=starter, body=body.strip(),
    ), []


def _as_date(value) -> str | None:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if _DATE.match(text[:10]):
            try:
                return dt.date.fromisoformat(text[:10]).isoformat()
            except ValueError:
                return None
    return None


def _drop_duplicates(
    found: list[tuple[Topic, str, str]], problems: list[str]
) -> tuple[list[Topic], list[str]]:
    """Keep the first topic of each slug; a repeated slug is a problem, not an overwrite.

    ``found`` holds (topic, where it is for messages, a short name for it).
    """
    first: dict[str, str] = {}
    kept = []
    for topic, where, name in found:
        if topic.slug in first:
            problems.append(f"{where}: slug {topic.slug!r} is already used by {first[topic.slug]}; "
                            "this one was skipped")
            continue
        first[topic.slug] = name
        kept.append(topic)
    return kept, problems


# --------------------------------------------------------------------------
# Storing and listing


def import_topics(
    db: sqlite_utils.Database,
    topics: list[Topic],
    *,
    clock: Clock,
    source: str = "",
    partial: bool = False,
) -> dict:
    """Add new topics and update changed ones in place, by slug; nothing is duplicated.

    ``partial=True`` is for sources that say nothing about ``starter`` or
    ``body`` (a feed): the stored values of those two are kept. Topics absent
    from ``topics`` are left alone. Returns counts: added, updated, unchanged.
    """
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    now = iso(clock())
    moved = False  # only the source changed
    _forget_vocabulary(db)
    with db.atomic():
        for topic in topics:
            row = _row(topic)
            existing = db.execute(
                "SELECT title, url, summary, keywords, published, starter, body, source "
                "FROM topics WHERE slug = ?", [topic.slug],
            ).fetchone()
            if existing is None:
                db.execute(
                    "INSERT INTO topics (slug, title, url, summary, keywords, keywords_text, "
                    "published, starter, body, source, imported_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [topic.slug, row["title"], row["url"], row["summary"], row["keywords"],
                     row["keywords_text"], row["published"], row["starter"], row["body"],
                     source, now, now],
                )
                counts["added"] += 1
                continue
            if partial:
                row["starter"], row["body"] = existing[5], existing[6]
            fields = ("title", "url", "summary", "keywords", "published", "starter", "body")
            if tuple(row[f] for f in fields) == tuple(existing[:7]):
                counts["unchanged"] += 1
                if source and existing[7] != source:
                    db.execute("UPDATE topics SET source = ? WHERE slug = ?", [source, topic.slug])
                    moved = True
                continue
            # UPDATE, not INSERT OR REPLACE: the row keeps its rowid and the
            # FTS triggers see the change.
            db.execute(
                "UPDATE topics SET title = ?, url = ?, summary = ?, keywords = ?, keywords_text = ?, "
                "published = ?, starter = ?, body = ?, source = ?, updated_at = ? WHERE slug = ?",
                [row["title"], row["url"], row["summary"], row["keywords"], row["keywords_text"],
                 row["published"], row["starter"], row["body"], source or existing[7], now,
                 topic.slug],
            )
            counts["updated"] += 1
        if counts["added"] or counts["updated"] or moved:
            # Each write leaves a small index segment behind, and every query
            # term is looked up in every segment: merge them into one.
            db.execute("INSERT INTO topics_fts (topics_fts) VALUES ('optimize')")
    return counts


def _row(topic: Topic) -> dict:
    return {
        "title": topic.title,
        "url": topic.url,
        "summary": topic.summary,
        "keywords": json.dumps(list(topic.keywords), ensure_ascii=False),
        # One keyword per line, so a phrase never runs into the next keyword.
        "keywords_text": "\n".join(topic.keywords),
        "published": topic.published,
        "starter": 1 if topic.starter else 0,
        "body": topic.body,
    }


def _as_dict(row: dict) -> dict:
    row = dict(row)
    row["keywords"] = json.loads(row["keywords"])
    row["starter"] = bool(row["starter"])
    return row


def list_topics(db: sqlite_utils.Database) -> list[dict]:
    """Every topic, newest first (without bodies; keywords as a list)."""
    return [_as_dict(r) for r in db.query(
        f"SELECT {', '.join(_TOPIC_COLUMNS)} FROM topics ORDER BY published DESC, slug"
    )]


def get_topic(db: sqlite_utils.Database, slug: str) -> dict | None:
    """One topic by slug, body included, or None."""
    rows = list(db.query("SELECT * FROM topics WHERE slug = ?", [slug]))
    if not rows:
        return None
    row = _as_dict(rows[0])
    row.pop("keywords_text", None)
    return row


def topics_published_since(db: sqlite_utils.Database, since: str | None) -> list[dict]:
    """Topics published after ``since``, newest first, for the weekly digest.

    ``since`` is an ISO date or datetime (None means every topic). Topics carry
    only a date, so with a datetime (say, when the previous digest went out) a
    topic dated that same UTC day counts only if it was imported after that
    moment: it cannot have been in that digest, and an older piece imported
    late is not news. With a plain date, published must be a later day.
    """
    if since is None:
        return list_topics(db)
    day, moment = _since(since)
    sql = f"SELECT {', '.join(_TOPIC_COLUMNS)} FROM topics WHERE published > ?"
    params = [day]
    if moment is not None:
        sql += " OR (published = ? AND imported_at > ?)"
        params += [day, moment]
    return [_as_dict(r) for r in db.query(sql + " ORDER BY published DESC, slug", params)]


def _since(since: str) -> tuple[str, str | None]:
    """(UTC day, UTC moment in the archive's format or None) of an ISO date or datetime."""
    text = since.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat(), None
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since: expected an ISO date or datetime, got {since!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).date().isoformat(), iso(moment)


# --------------------------------------------------------------------------
# Matching letters to topics
#
# A letter is long and a topic is short, so the letter is turned into a
# weighted query: its words minus stop words (a subject word counting more
# than a body word), plus the column's words for what the reader describes
# (mailer/data/synonyms.toml). The most informative terms (weight x idf) go to
# FTS5, whose bm25 ranks topics on title, keywords and summary. A score is
# that bm25 in units of the most one rare word can earn, so "3.0" means about
# three distinctive words' worth of evidence, whatever the catalog's size.
# docs/relevance.md has the method, the figures and the limits.


def match_topics(
    db: sqlite_utils.Database,
    subject: str,
    text: str,
    *,
    limit: int = 3,
    min_score: float | None = None,
) -> list[TopicMatch]:
    """The topics that fit a letter, best first; only those scoring ``min_score`` or more.

    ``min_score`` defaults to MIN_SCORE; pass 0 to see every topic that
    shares a word with the letter. May be empty.
    """
    threshold = MIN_SCORE if min_score is None else min_score
    return [m for m in _ranked(db, subject, text, limit) if m.score >= threshold][:limit]


def topics_for_letter(
    db: sqlite_utils.Database, subject: str, text: str, *, limit: int = 3
) -> tuple[list[TopicMatch], bool]:
    """The topics to link in a letter's acknowledgement, and whether we fell back.

    Good matches come first; when there are fewer than ``limit`` of them the
    list is filled with the column's starter topics, oldest first (a starter
    keeps the score it got, 0.0 if it shared no word with the letter). The
    flag is True when no topic fitted at all, so the list is starters only
    (and empty if the column marked none).
    """
    if limit <= 0:
        return [], False
    ranked = _ranked(db, subject, text, limit)
    chosen = [m for m in ranked if m.score >= MIN_SCORE][:limit]
    fell_back = not chosen
    if len(chosen) < limit:
        scores = {m.slug: m.score for m in ranked}
        taken = {m.slug for m in chosen}
        for slug, title, url, summary in db.execute(
            "SELECT slug, title, url, summary FROM topics WHERE starter = 1 ORDER BY published, slug"
        ):
            if len(chosen) >= limit:
                break
            if slug not in taken:
                chosen.append(TopicMatch(slug, title, url, summary, scores.get(slug, 0.0), True))
    return chosen, fell_back


def _ranked(db: sqlite_utils.Database, subject: str, text: str, limit: int) -> list[TopicMatch]:
    """Topics sharing informative words with the letter, best first, with their scores."""
    total, frequencies = _vocabulary(db)
    query = _query(_letter_terms(subject, text), total, frequencies)
    if not query:
        return []
    rows = db.execute(
        "WITH hits AS (SELECT rowid, bm25(topics_fts, ?, ?, ?) AS rank FROM topics_fts "
        "WHERE topics_fts MATCH ? ORDER BY rank LIMIT ?) "
        "SELECT t.slug, t.title, t.url, t.summary, t.starter, hits.rank "
        "FROM hits JOIN topics t ON t.rowid = hits.rowid",
        [*COLUMN_WEIGHTS, query, limit + _STARTER_SLACK],
    ).fetchall()
    # The most bm25 gives one word found in a single topic: scores are in
    # units of that, so they read the same for a catalog of 20 or 5,000.
    unit = _idf(total, 1) * (_BM25_K1 + 1)
    matches = []
    for slug, title, url, summary, starter, rank in rows:
        score = -rank / unit
        if starter:
            # Starters are linked anyway when nothing fits; as a *match* they
            # must win on their own words, not on "start" and "change".
            score *= STARTER_WEIGHT
        matches.append(TopicMatch(slug, title, url, summary, round(score, 3), bool(starter)))
    matches.sort(key=lambda m: (-m.score, m.slug))
    return matches


def _query(terms, total: int, frequencies: dict[str, int]) -> str:
    """The FTS5 query for a letter's weighted terms.

    Terms the catalog does not contain are dropped; the rest are taken in
    order of weight x idf while they fit in MAX_QUERY_TERMS and MAX_POSTINGS
    (the number of topic rows bm25 has to score, which is what costs time).
    A term repeats as often as it weighs, because bm25 sums over phrases.
    """
    candidates = []
    for phrase, stems, weight in terms:
        # A phrase is in at most as many topics as its rarest word.
        df = min(frequencies.get(stem, 0) for stem in stems)
        if df:
            candidates.append((weight * _idf(total, df), phrase, weight, df))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    parts: list[str] = []
    postings = used = 0
    for _, phrase, weight, df in candidates:
        if used >= MAX_QUERY_TERMS:
            break
        if postings + df > MAX_POSTINGS:
            continue
        parts.extend([f'"{phrase}"'] * max(1, min(MAX_REPEAT, round(weight))))
        postings += df
        used += 1
    return " OR ".join(parts)


def _idf(total: int, df: int) -> float:
    # FTS5's own formula, floored the same way.
    idf = math.log((total - df + 0.5) / (df + 0.5))
    return idf if idf > 0 else 1e-6


_VOCABULARIES: "weakref.WeakKeyDictionary[sqlite_utils.Database, tuple]" = weakref.WeakKeyDictionary()


def _vocabulary(db: sqlite_utils.Database) -> tuple[int, dict[str, int]]:
    """How many topics there are, and in how many each stem appears.

    Read once from the index (fts5vocab) and kept per database handle until
    the index's structure record changes, which every committed write to it
    does; import_topics also drops it, for writes still inside a transaction.
    """
    marker = db.execute("SELECT block FROM topics_fts_data WHERE id = 10").fetchone()
    cached = _VOCABULARIES.get(db)
    if cached is not None and marker is not None and cached[0] == marker[0]:
        return cached[1], cached[2]
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.topics_fts_vocab "
        "USING fts5vocab(main, topics_fts, row)"
    )
    frequencies = dict(db.execute("SELECT term, doc FROM temp.topics_fts_vocab").fetchall())
    total = db.execute("SELECT count(*) FROM topics").fetchone()[0]
    # Reading the vocabulary flushes pending index writes, so read the marker after.
    marker = db.execute("SELECT block FROM topics_fts_data WHERE id = 10").fetchone()
    if marker is not None:
        _VOCABULARIES[db] = (marker[0], total, frequencies)
    return total, frequencies


def _forget_vocabulary(db: sqlite_utils.Database) -> None:
    _VOCABULARIES.pop(db, None)


def letter_terms(subject: str, text: str) -> dict[str, float]:
    """The words and phrases of a letter worth matching on, with their weights.

    A word counts SUBJECT_WEIGHT if it is in the subject, plus 1 + ln(n) for n
    uses in the body; stop words, greetings, quoted replies and signatures are
    left out. Each reader's word or phrase in synonyms.toml adds the column's
    word for it, weighted the same way times SYNONYM_WEIGHT. Keys are words or
    space-separated phrases, heaviest first (ties in order of appearance).
    """
    terms = sorted(_letter_terms(subject, text), key=lambda term: -term[2])
    return {phrase: round(weight, 4) for phrase, _, weight in terms}


def _letter_terms(subject: str, text: str) -> list[tuple[str, tuple[str, ...], float]]:
    """(phrase, its stems, weight) for each term of a letter; see letter_terms."""
    synonyms = _synonyms()
    surface: dict[tuple[str, ...], str] = {}
    # Per term: [uses in the body, in the subject?] for the reader's own words
    # and, separately, for the column's words the synonyms file added.
    direct: dict[tuple[str, ...], list] = {}
    added: dict[tuple[str, ...], list] = {}
    for words, is_subject in ((_tokens(subject or ""), True),
                              (_tokens(_letter_body(text or "")), False)):
        stems = [_stem(word) for word in words]
        for index, word in enumerate(words):
            stem = stems[index]
            if len(word) > 1 and word not in STOP_WORDS and not word.isdigit():
                key = (stem,)
                surface.setdefault(key, word)
                _count(direct, key, is_subject)
            for reader, targets in synonyms.get(stem, ()):
                if len(reader) == 1 or tuple(stems[index:index + len(reader)]) == reader:
                    for phrase, key in targets:
                        surface.setdefault(key, phrase)
                        _count(added, key, is_subject)
    terms = []
    for key, phrase in surface.items():
        weight = _weight(direct.get(key)) + SYNONYM_WEIGHT * _weight(added.get(key))
        terms.append((phrase, key, weight))
    return terms


def _count(tally: dict, key: tuple[str, ...], is_subject: bool) -> None:
    entry = tally.setdefault(key, [0, False])
    if is_subject:
        entry[1] = True
    else:
        entry[0] += 1


def _weight(entry) -> float:
    if entry is None:
        return 0.0
    return _damped(entry[0]) + (SUBJECT_WEIGHT if entry[1] else 0.0)


def _damped(count: float) -> float:
    """Saying a word five times makes it matter more, not five times more."""
    return 0.0 if count <= 0 else 1.0 + math.log(count)


def _tokens(text: str) -> list[str]:
    """Words as FTS5's unicode61 tokenizer sees them: case and diacritics folded."""
    text = text[:MAX_LETTER_CHARS]
    if not text.isascii():
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    return _WORD.findall(text.lower())


_QUOTE_HEADER = re.compile(r"^\s*(on\b.{0,200}\bwrote:|-+\s*original message\s*-+)\s*$", re.I)
_GREETING = re.compile(r"^\s*(dear|hi|hello|hey)\b.{0,40}$", re.I)


def _letter_body(text: str) -> str:
    """The reader's own words: no greeting, quoted reply or signature block.

    A reply to our acknowledgement quotes the topics we linked; reading the
    quote would only match them again.
    """
    kept: list[str] = []
    for line in text[:MAX_LETTER_CHARS].splitlines():
        if line.rstrip() == "--" or _QUOTE_HEADER.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        if not any(k.strip() for k in kept) and _GREETING.match(line):
            continue
        kept.append(line)
    return "\n".join(kept)


# The synonyms file: [synonyms] maps a word or phrase the column uses (as in
# its titles and keywords) to the words and phrases readers use for it.
SynonymTable = dict[str, tuple[tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]], ...]]


@functools.lru_cache(maxsize=1)
def _synonyms() -> SynonymTable:
    """mailer/data/synonyms.toml, read once, as a lookup by the first stem of a reader's phrase."""
    text = resources.files("mailer").joinpath("data/synonyms.toml").read_text(encoding="utf-8")
    return parse_synonyms(tomllib.loads(text))


def parse_synonyms(data: dict) -> SynonymTable:
    """Index ``{column phrase: [reader phrases]}`` by the first stem of each reader phrase."""
    table: dict[str, dict[tuple[str, ...], list]] = {}
    for column_phrase, reader_phrases in (data.get("synonyms") or {}).items():
        words = _tokens(column_phrase)
        if not words or not isinstance(reader_phrases, list):
            raise ValueError(f"synonyms: {column_phrase!r} must map to a list of words")
        target = (" ".join(words), tuple(_stem(word) for word in words))
        for reader_phrase in reader_phrases:
            stems = tuple(_stem(word) for word in _tokens(str(reader_phrase)))
            if not stems or stems == target[1]:
                continue
            targets = table.setdefault(stems[0], {}).setdefault(stems, [])
            if target not in targets:
                targets.append(target)
    return {
        first: tuple((reader, tuple(targets)) for reader, targets in by_phrase.items())
        for first, by_phrase in table.items()
    }


# --------------------------------------------------------------------------
# The porter stemmer of SQLite's FTS5 (ext/fts5/fts5_tokenize.c), ported so
# that the words we weigh here are the terms the index holds. Tests check the
# two agree on every word of the example catalog and the bench letters.

_PORTER_MAX_TOKEN = 64

_STEP2 = (("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"),
          ("izer", "ize"), ("logi", "log"), ("bli", "ble"), ("alli", "al"), ("entli", "ent"),
          ("eli", "e"), ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"), ("ator", "ate"),
          ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"),
          ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"))
_STEP3 = (("ical", "ic"), ("ness", ""), ("icate", "ic"), ("iciti", "ic"), ("ful", ""),
          ("ative", ""), ("alize", "al"))
_STEP4 = ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
          "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize")


def _is_vowel(c: str, y_is_vowel: bool) -> bool:
    return c in "aeiou" or (y_is_vowel and c == "y")


def _gobble_vc(s: str, prev_consonant: bool) -> int:
    consonant = prev_consonant
    i = 0
    while i < len(s):
        consonant = not _is_vowel(s[i], consonant)
        if not consonant:
            break
        i += 1
    for j in range(i + 1, len(s)):
        consonant = not _is_vowel(s[j], consonant)
        if consonant:
            return j + 1
    return 0


def _m_gt0(s: str) -> bool:
    return bool(_gobble_vc(s, False))


def _m_gt1(s: str) -> bool:
    n = _gobble_vc(s, False)
    return bool(n and _gobble_vc(s[n:], True))


def _m_eq1(s: str) -> bool:
    n = _gobble_vc(s, False)
    return bool(n and not _gobble_vc(s[n:], True))


def _ostar(s: str) -> bool:
    if not s or s[-1] in "wxy":
        return False
    mask, consonant = 0, False
    for c in s:
        consonant = not _is_vowel(c, consonant)
        mask = (mask << 1) + consonant
    return (mask & 7) == 5


def _has_vowel(s: str) -> bool:
    return any(_is_vowel(c, i > 0) for i, c in enumerate(s))


def _replace_suffix(word: str, rules, condition) -> str:
    for suffix, replacement in rules:
        if len(word) > len(suffix) and word.endswith(suffix):
            stem = word[: -len(suffix)]
            return stem + replacement if condition(stem, suffix) else word
    return word


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """The stem FTS5's porter tokenizer stores for ``word`` (already lower-cased)."""
    if not 3 <= len(word.encode("utf-8")) <= _PORTER_MAX_TOKEN:
        return word
    w = word
    # Step 1a
    if w.endswith("s"):
        if w[-2] == "e":
            if (len(w) > 4 and w[-4:-2] == "ss") or (len(w) > 3 and w[-3] == "i"):
                w = w[:-2]
            else:
                w = w[:-1]
        elif w[-2] != "s":
            w = w[:-1]
    # Step 1b
    stripped = False
    if len(w) > 3 and w.endswith("eed"):
        if _m_gt0(w[:-3]):
            w = w[:-1]
    elif len(w) > 2 and w.endswith("ed"):
        if _has_vowel(w[:-2]):
            w, stripped = w[:-2], True
    elif len(w) > 3 and w.endswith("ing"):
        if _has_vowel(w[:-3]):
            w, stripped = w[:-3], True
    if stripped:
        if len(w) > 2 and w[-2:] in ("at", "bl", "iz"):
            w += "e"
        elif len(w) >= 2 and not _is_vowel(w[-1], False) and w[-1] not in "lsz" and w[-1] == w[-2]:
            w = w[:-1]
        elif _m_eq1(w) and _ostar(w):
            w += "e"
    # Step 1c
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    # Steps 2-4
    w = _replace_suffix(w, _STEP2, lambda stem, _: _m_gt0(stem))
    w = _replace_suffix(w, _STEP3, lambda stem, _: _m_gt0(stem))
    w = _replace_suffix(
        w, [(s, "") for s in _STEP4],
        lambda stem, suffix: (stem[-1:] in ("s", "t") and _m_gt1(stem)) if suffix == "ion"
        else _m_gt1(stem),
    )
    # Step 5a
    if w.endswith("e") and (_m_gt1(w[:-1]) or (_m_eq1(w[:-1]) and not _ostar(w[:-1]))):
        w = w[:-1]
    # Step 5b
    if len(w) > 1 and w.endswith("ll") and _m_gt1(w[:-1]):
        w = w[:-1]
    return w


#: Words too common in letters to say what a letter is about: English function
#: words, plus the small talk of writing to a column ("dear", "thanks", "feel").
STOP_WORDS = frozenset("""
a about above after again against ago all almost also am an and any are aren as at be
because been before being below between both but by can cannot could couldn did didn do
does doesn doing don down during each even ever every few for from further get gets
getting got had hadn has hasn have haven having he her here hers herself him himself his
how however if in into is isn it its itself just let ll me might more most much must
mustn my myself no nor not now of off on once one only or other our ours ourselves out
over own re same say says said shan she should shouldn so some still such than that the
their theirs them themselves then there these they this those through to too under
until up upon us ve very was wasn we were weren what when where which while who whom why
will with won would wouldn yet you your yours yourself yourselves
actually also always anyone anything anyway around back bit come comes coming day days
dear else every everyone everything feel feeling feels felt going gone good hello hi
honestly know knew like lot lots make makes making many maybe mean means mine month months
need needs never new next nothing often okay ok one ones part people please pretty put
quite really regards right said say see seem seems since something sometimes sort sure
take takes tell thank thanks thing things think thought time times today told try tried
trying two use used want wanted wants way ways week weeks well went whole will wish
year years yes yesterday
""".split())
