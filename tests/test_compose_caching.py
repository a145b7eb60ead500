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
