"""The caches of message building give the bytes the uncached building gives.

``outbound/compose.py`` keeps the header objects every message repeats (and
their folded bytes), and ``outbound/templating.py`` keeps wrapped lines of
plain text. Both are speed-ups only: a message built with them must be the
same bytes, byte for byte, as one built with ``email``'s stock SMTP policies
and a fresh wrap, for ordinary, hostile and non-ASCII readers alike.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import secrets
from email import policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.config import Config
from mailer.outbound import compose, templating
from mailer.outbound.compose import AUTO_REPLY_HEADERS, Outgoing, build_message, greeting, make_address, render
from mailer.outbound.templating import template_environment
from mailer.store.parsing import CachedHeaderRegistry

READERS = [
    ("dana@example.org", "Dana Reader", "Jealous of my best friend"),
    ("x@example.org", "", ""),
    ("zoë@exämple.org", "Zoë Ünïcode", "Grief — after my father died"),
    ("eve@example.org", "Eve\r\nBcc: victim@example.org", "=?utf-8?q?hi=0D=0ABcc:_x@y?= and a very long subject "
     "that goes on and on past the width of one folded header line, with words"),
    ("sam@example.org", "S" * 90, "a-word-too-long-for-any-line-" * 5),
]

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def fixed_ids(monkeypatch):
    """Message-ID and boundary made the same for both builds (they are random otherwise)."""
    monkeypatch.setattr(email.utils, "make_msgid", lambda domain: f"<fixed@{domain}>")
    monkeypatch.setattr(secrets, "token_hex", lambda n: "ab" * n)


def _build(address, name, subject, *, crisis=False):
    config = Config()
    body = render(template_environment(None), "acknowledgement", {
        "reader_name": name, "greeting": greeting(name), "name": name, "subject": subject,
        "subject_quoted": f"“{subject}”", "topics": [], "fell_back": True, "crisis": crisis, "urgent": crisis,
        "crisis_resources": config.crisis.resources.strip(), "helplines": config.crisis,
        "letters_address": config.addresses.letters, "column": config.column,
    })
    outgoing = Outgoing(
        sender=make_address(config.addresses.letters, config.column.name),
        recipient=make_address(address, name), subject=compose.reply_subject(subject), body=body,
        domain="column.example", in_reply_to="<letter@example.org>", references=["<earlier@example.org>"],
        extra_headers=AUTO_REPLY_HEADERS,
    )
    return build_message(outgoing, clock=lambda: NOW).as_bytes()


@pytest.mark.parametrize("crisis", [False, True])
def test_cached_building_gives_the_bytes_of_uncached_building(fixed_ids, monkeypatch, crisis):
    cached = [_build(*reader, crisis=crisis) for reader in READERS * 2]  # the second round hits the caches
    assert compose._SMTP.header_factory._constants, "the constant headers are kept"

    monkeypatch.setattr(compose, "_SMTP", policy.SMTP.clone(header_factory=CachedHeaderRegistry()))
    monkeypatch.setattr(compose, "_SMTPUTF8", policy.SMTPUTF8.clone(header_factory=CachedHeaderRegistry()))
    monkeypatch.setattr(templating, "_wrap_line", templating._wrap_line.__wrapped__)
    uncached = [_build(*reader, crisis=crisis) for reader in READERS * 2]

    assert cached == uncached


def test_a_readers_words_are_never_kept_by_the_header_cache(fixed_ids):
    for reader in READERS:
        _build(*reader)
    kept = list(compose._SMTP.header_factory._constants) + list(compose._SMTPUTF8.header_factory._constants)
    names = {key[0].lower() for key in kept}
    assert names <= compose._CONSTANT_HEADERS | compose._OWN_ADDRESS_HEADERS
    readers_words = ("Dana", "Jealous", "Eve", "victim", "boundary", "example.org")
    assert not any(word in str(part) for key in kept for part in key[1:] for word in readers_words)


#: Readers' words: ordinary, markup and entities, controls (CR, NUL, no-break
#: space, line separator), private-use characters, spaces at the edges.
_WORDS = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
        st.sampled_from(["&", "&amp;", "&nbsp;", "<b>", "</p>", "<!--", "-->", '"', "'", ">", "<", "\xa0", "\r", "\n",
                         "\r\n", "\0", "\t", "\ue000", "\ue0010\ue001", "\ue0001\ue001", " ", "é", "“", "😀", "\u2028",
                         "{{ x }}", "<style>p{color:red}</style>", "javascript:", "x" * 90]),
        st.text(max_size=8),
    ),
    max_size=8,
).map("".join)


# -- headers kept between messages: the column's From, the Date of the second -----------

def _headers_at(when, *, column_name="The Column", name="Dana"):
    outgoing = Outgoing(
        sender=make_address("letters@column.example", column_name), recipient=make_address("dana@example.org", name),
        subject="Re: hello", body=compose.Rendered("Dear Dana,\n", "<p>Dear Dana,</p>"), domain="column.example",
        extra_headers=AUTO_REPLY_HEADERS,
    )
    raw = build_message(outgoing, clock=lambda: when).as_bytes()
    return raw.split(b"\r\n\r\n", 1)[0]


def test_the_kept_date_and_from_follow_the_clock_and_the_config(fixed_ids, monkeypatch):
    later = NOW + dt.timedelta(seconds=1)
    steps = [(NOW, "The Column"), (NOW, "The Column"), (later, "The Column"), (later, "Another Column"),
             (NOW, "Zoë's Column, with a comma")]
    ours = [_headers_at(when, column_name=column) for when, column in steps]
    monkeypatch.setattr(compose, "_SMTP", policy.SMTP.clone(header_factory=CachedHeaderRegistry()))
    monkeypatch.setattr(compose, "_SMTPUTF8", policy.SMTPUTF8.clone(header_factory=CachedHeaderRegistry()))
    stock = [_headers_at(when, column_name=column) for when, column in steps]
    assert ours == stock
    assert b"Date: Thu, 03 Dec 2026 12:00:01 +0000" in ours[2] and b"Another Column" in ours[3]


def _one_line_by_character(text: str) -> str:
    """header_text's cleaning as it was: every character looked at."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


@settings(max_examples=300, deadline=None)
@given(text=_WORDS)
def test_header_text_cleans_as_it_did_character_by_character(text):
    assert compose._one_line(text) == _one_line_by_character(text)
