"""The column's catalog of published topics: reading it and keeping it.

A topic is one published piece (slug, title, URL, summary, keywords, date),
optionally with the themes the columnist files it under and example letters
it answers. The catalog comes from a TOML file of ``[[topic]]`` tables, from
Markdown files with a small front matter block, or from the column's RSS/Atom
feed; importing any of them again updates the same rows in place.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from mailer.clock import Clock, iso
from mailer.store.parsing import html_to_text
from mailer.topics.matching import forget_vocabulary
from mailer.topics.themes import theme_names

#: File suffixes read as each kind of catalog.
TOML_SUFFIXES = (".toml",)
MARKDOWN_SUFFIXES = (".md", ".markdown")
FEED_SUFFIXES = (".xml", ".rss", ".atom")

#: How long to wait for a feed served over HTTP.
FEED_TIMEOUT_SECONDS = 30
FEED_MAX_BYTES = 20 * 1024 * 1024

#: At most this many example letters per topic, each at most this long.
MAX_EXAMPLES = 50
MAX_EXAMPLE_CHARS = 20_000

_REQUIRED = ("slug", "title", "url", "summary", "keywords", "published")
_OPTIONAL = ("starter", "body", "themes", "examples")
_KNOWN = _REQUIRED + _OPTIONAL
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TOPIC_COLUMNS = ("slug", "title", "url", "summary", "keywords", "themes", "published",
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
    #: Theme ids the columnist chose (empty: derived from the topic's text).
    themes: tuple[str, ...] = ()
    #: Letters this topic answers, as the columnist wrote or chose them.
    examples: tuple[str, ...] = ()



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


def load_feed_bytes(source: str, data: bytes) -> tuple[list[Topic], list[str]]:
    """Topics from the bytes of an RSS/Atom feed (fetched elsewhere); problems as in :func:`load_catalog`."""
    return _load_feed(source, data)


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
    themes = _themes(data.get("themes", []), where, problems)
    examples = _examples(data.get("examples", []), where, problems)
    if problems:
        return None, problems
    return Topic(
        slug=values["slug"], title=values["title"], url=values["url"],
        summary=values["summary"], keywords=values["keywords"], published=values["published"],
        starter=starter, body=body.strip(), themes=themes, examples=examples,
    ), []


def _themes(value, where: str, problems: list[str]) -> tuple[str, ...]:
    """The theme ids of a topic's ``themes`` key; unknown names are problems."""
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        problems.append(f"{where}: key 'themes': expected a list of theme names, got {value!r}")
        return ()
    known = theme_names()
    chosen = tuple(dict.fromkeys(t.strip().lower() for t in value if t.strip()))
    unknown = [t for t in chosen if t not in known]
    if unknown:
        problems.append(f"{where}: key 'themes': unknown theme {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(sorted(known))})")
    return chosen


def _examples(value, where: str, problems: list[str]) -> tuple[str, ...]:
    """The example letters of a topic's ``examples`` key."""
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        problems.append(f"{where}: key 'examples': expected a list of letters (text), got {value!r}")
        return ()
    if len(value) > MAX_EXAMPLES:
        problems.append(f"{where}: key 'examples': {len(value)} letters; at most {MAX_EXAMPLES}")
    if any(len(t) > MAX_EXAMPLE_CHARS for t in value):
        problems.append(f"{where}: key 'examples': a letter is longer than {MAX_EXAMPLE_CHARS} characters")
    return tuple(t.strip() for t in value if t.strip())


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

    ``partial=True`` is for sources that say nothing about ``starter``,
    ``body``, ``themes`` or ``examples`` (a feed): the stored values are kept. Topics absent
    from ``topics`` are left alone. Returns counts: added, updated, unchanged.
    """
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    now = iso(clock())
    moved = False  # only the source changed
    forget_vocabulary(db)
    with db.atomic():
        for topic in topics:
            row = _row(topic)
            existing = db.execute(
                "SELECT title, url, summary, keywords, published, starter, body, themes, examples, "
                "source FROM topics WHERE slug = ?", [topic.slug],
            ).fetchone()
            if existing is None:
                db.execute(
                    "INSERT INTO topics (slug, title, url, summary, keywords, keywords_text, "
                    "published, starter, body, themes, examples, source, imported_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [topic.slug, row["title"], row["url"], row["summary"], row["keywords"],
                     row["keywords_text"], row["published"], row["starter"], row["body"],
                     row["themes"], row["examples"], source, now, now],
                )
                counts["added"] += 1
                continue
            if partial:
                row["starter"], row["body"] = existing[5], existing[6]
                row["themes"], row["examples"] = existing[7], existing[8]
            fields = ("title", "url", "summary", "keywords", "published", "starter", "body",
                      "themes", "examples")
            if tuple(row[f] for f in fields) == tuple(existing[:9]):
                counts["unchanged"] += 1
                if source and existing[9] != source:
                    db.execute("UPDATE topics SET source = ? WHERE slug = ?", [source, topic.slug])
                    moved = True
                continue
            # UPDATE, not INSERT OR REPLACE: the row keeps its rowid and the
            # FTS triggers see the change.
            db.execute(
                "UPDATE topics SET title = ?, url = ?, summary = ?, keywords = ?, keywords_text = ?, "
                "published = ?, starter = ?, body = ?, themes = ?, examples = ?, source = ?, "
                "updated_at = ? WHERE slug = ?",
                [row["title"], row["url"], row["summary"], row["keywords"], row["keywords_text"],
                 row["published"], row["starter"], row["body"], row["themes"], row["examples"],
                 source or existing[9], now, topic.slug],
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
        "themes": json.dumps(list(topic.themes)),
        "examples": json.dumps(list(topic.examples), ensure_ascii=False),
    }


def _as_dict(row: dict) -> dict:
    row = dict(row)
    row["keywords"] = json.loads(row["keywords"])
    row["starter"] = bool(row["starter"])
    if "themes" in row:
        row["themes"] = json.loads(row["themes"])
    if "examples" in row:
        row["examples"] = json.loads(row["examples"])
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
