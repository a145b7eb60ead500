"""Topic drafts: a reader's letter with its identifying details removed."""

from __future__ import annotations

import re

import sqlite_utils

from mailer.clock import Clock
from mailer.config import Config
from mailer.desk.errors import NothingToAnswer
from mailer.desk.text import CLOSING, PLACEHOLDERS, slug
from mailer.desk.threads import thread_detail
from mailer.store import archive

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"]+")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d \t().\-/]{5,}\d(?![\w])")
_NOT_PHONE = re.compile(r"^(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{4}\s*[-–]\s*\d{4})$")
_STREET_WORDS = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
    "ter|circle|cir|highway|hwy|parkway|pkwy|square|sq|trail|close|crescent|row|alley"
)
_STREET = re.compile(
    r"\b\d{1,6}[A-Za-z]?,?[ \t]+(?:(?:[A-Z][\w'.-]*|\d+(?:st|nd|rd|th))[ \t]+){0,4}"
    rf"(?i:{_STREET_WORDS})\b\.?"
    r"(?:,?[ \t]*(?i:apt|apartment|suite|ste|unit|flat|#)\.?[ \t]*[\w-]+)?"
)
_PO_BOX = re.compile(r"(?i)\bP\.?\s?O\.?\s*Box\s+\d+")
_CITY_STATE_ZIP = re.compile(r"\b[A-Z][A-Za-z.' -]{1,30},\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")
_UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b")
_MY_NAME = re.compile(r"(?i:\b(?:my name is|my name's|call me|signed,?)\s+)([A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)?)")
#: A closing counts only this close to the end of the letter.
_CLOSING_WINDOW = 6
_SIGNATURE_LINE = re.compile(r"^\s*[-–—~]*\s*((?:[A-Z][\w'.-]*\s*){1,4})\s*$")
_QUOTE_HEADER = re.compile(r"^\s*(on .{0,200} wrote:|-----\s*original message\s*-----)\s*$", re.IGNORECASE)



def anonymize(text: str, names: list[str] = ()) -> str:
    """``text`` with names, email and web addresses, phone numbers and street addresses replaced.

    ``names`` are the reader's own names (the From display name); each is
    removed wherever it appears, whole and word by word, as are names the
    letter gives itself ("my name is ...", the name under the closing).
    Errs on the side of removing too much: a draft is read by a person
    before anything is published.
    """
    kept = _own_words(text)
    names = list(names) + _signature_names(kept)
    body = "\n".join(kept)
    body = _EMAIL.sub("[email]", body)
    body = _URL.sub("[link]", body)
    body = _PO_BOX.sub("[address]", body)
    body = _STREET.sub("[address]", body)
    body = _CITY_STATE_ZIP.sub("[address]", body)
    body = _UK_POSTCODE.sub("[address]", body)
    body = _PHONE.sub(_phone_or_not, body)
    names += [m.group(1) for m in _MY_NAME.finditer(body)]
    return _remove_names(body, names).strip()


def _own_words(text: str) -> list[str]:
    """The reader's own lines: no quoted replies, no signature block after '-- '."""
    kept = []
    for line in (text or "").replace("\r\n", "\n").split("\n"):
        if line.rstrip() in ("--", "-- "):
            break
        if _QUOTE_HEADER.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


def _signature_names(lines: list[str]) -> list[str]:
    """Names signed under a closing ("Thank you,\\nDana") or on a last line ("- Dana")."""
    names = []
    start = max(0, len(lines) - _CLOSING_WINDOW)
    for i, line in enumerate(lines[start:], start=start):
        if CLOSING.match(line):
            names += [m.group(1).strip() for m in map(_SIGNATURE_LINE.match, lines[i + 1:i + 4]) if m]
    if lines:
        last = re.match(r"^\s*[-–—~]+\s*([A-Z][\w'.-]*(?:\s+[A-Z][\w'.-]*){0,2})\s*$", lines[-1])
        if last:
            names.append(last.group(1))
    return names


def _phone_or_not(match: re.Match) -> str:
    text = match.group()
    digits = sum(ch.isdigit() for ch in text)
    if digits < 7 or digits > 15 or _NOT_PHONE.match(text.strip()):
        return text
    return "[phone]"


def _remove_names(text: str, names) -> str:
    words: set[str] = set()
    wholes: set[str] = set()
    for name in names:
        name = " ".join((name or "").replace('"', " ").split())
        if not name:
            continue
        wholes.add(name)
        for word in re.findall(r"[^\W\d_][\w'-]*", name):
            word = word.strip("'-")
            if len(word) >= 2 and word.casefold() not in _NOT_NAMES:
                words.add(word)
    for whole in sorted(wholes, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(whole)}(?!\w)", "[name]", text, flags=re.IGNORECASE)
    for word in sorted(words, key=len, reverse=True):
        text = re.sub(rf"(?<![\w\[]){re.escape(word)}(?![\w\]])", "[name]", text, flags=re.IGNORECASE)
    # "[name] [name]" is one person.
    return re.sub(r"\[name\](?:\s+\[name\])+", "[name]", text)


#: Words a display name may hold that are not names ("Dana (work)", "Mom of two").
_NOT_NAMES = frozenset({"mr", "mrs", "ms", "dr", "the", "and", "of", "a", "an", "mom", "dad", "work", "home"})


def topic_draft(db: sqlite_utils.Database, thread_id: int, *, config: Config, clock: Clock) -> str:
    """A Markdown topic (front matter for ``mailer topics import``) from the thread's letters.

    The reader's name, email and web addresses, phone numbers and street
    addresses are removed from the title and the text; the summary is left
    empty on purpose, so the draft cannot be imported before a person has
    read it and written one.
    """
    detail = thread_detail(db, thread_id)
    letters = [m for m in detail["messages"] if m["direction"] == "inbound" and m["kind"] == "letter"]
    if not letters:
        raise NothingToAnswer(f"thread {thread_id} holds no letter to draft a topic from")
    names = sorted({m["from_name"] for m in letters if m["from_name"]})
    title = anonymize(archive_subject(letters[0]["subject"]), names) or "A letter to the column"
    title = " ".join(title.split())
    name = slug(title) or f"letter-{thread_id}"
    texts = [anonymize(m["body_text"] or "", names) for m in letters]
    keywords = _keywords(title, "\n".join(texts))
    today = clock().astimezone(config.column.zone).date().isoformat()
    topics = [t["slug"] for m in detail["messages"] for t in m["topics"]]
    lines = [
        "---",
        f"# Draft from thread {thread_id}, written {today}. Identifying details were removed",
        "# automatically ([name], [email], [phone], [address], [link]): read it all before",
        "# publishing. Write the summary, check slug, url, keywords and date, then",
        "# `mailer topics import FILE`.",
    ]
    if topics:
        lines.append(f"# The acknowledgement linked: {', '.join(dict.fromkeys(topics))}")
    lines += [
        f"slug: {name}",
        f"title: \"{title}\"",
        f"url: {config.column.site_url.rstrip('/')}/topics/{name}",
        "summary: ",
        f"keywords: [{', '.join(keywords)}]",
        f"published: {today}",
        "---",
    ]
    for i, text in enumerate(texts):
        lines.append("")
        if i:
            lines.append("*The reader wrote again:*")
            lines.append("")
        lines += [f"> {line}".rstrip() for line in text.split("\n")]
    lines += ["", "— A reader", "", "<!-- Your answer here. -->", "", "Enjoy Your Changes!", ""]
    return "\n".join(lines)


def archive_subject(subject: str) -> str:
    """A subject without Re:/Fwd: prefixes, as written (not casefolded)."""
    return archive._REPLY_PREFIX.sub("", subject or "").strip()


def _keywords(title: str, text: str, limit: int = 6) -> list[str]:
    try:
        from mailer.topics import letter_terms
    except ImportError:  # pragma: no cover - topics is part of the package
        return []
    placeholder_words = {p.strip("[]") for p in PLACEHOLDERS}
    terms = letter_terms(title, text)
    return [t for t in terms if t not in placeholder_words and t.isalpha() and len(t) >= 3][:limit]


