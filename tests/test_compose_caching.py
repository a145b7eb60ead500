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


# -- the stylesheet inlined once per shape -------------------------------------------
#
# templating.render_inlined inlines an HTML template's "shape" (each value a
# placeholder) once and puts each message's values back. What a reader gets
# must be byte for byte what inlining the whole rendered message gives.

import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from design_samples import render_messages  # noqa: E402

#: Readers' words: ordinary, markup and entities, the characters the inliner
#: escapes or the HTML parser changes (CR, NUL, no-break space), the
#: placeholders' own characters, spaces at the edges.
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


@dataclass
class _Topic:
    slug: str
    title: str
    url: str
    summary: str


def _plain(env, name, context):
    return templating.inline_css(env.get_template(name).render(**context))


def _ack_context(name, subject, topics, crisis, config=None):
    config = config or Config()
    return {
        "reader_name": name, "greeting": greeting(name), "name": name, "subject": subject,
        "subject_quoted": f"“{subject}”" if subject else "", "topics": topics, "fell_back": not topics,
        "crisis": crisis, "urgent": crisis, "crisis_resources": config.crisis.resources.strip(),
        "helplines": config.crisis, "letters_address": config.addresses.letters, "column": config.column,
    }


_ENV = template_environment(None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_WORDS, subject=_WORDS, crisis=st.booleans(),
    topics=st.lists(st.builds(_Topic, slug=st.just("t"), title=_WORDS, url=_WORDS | st.just("https://column.example/p"),
                              summary=_WORDS), max_size=4),
)
def test_an_acknowledgement_inlined_by_its_shape_is_the_whole_message_inlined(name, subject, crisis, topics):
    context = _ack_context(name, subject, topics, crisis)
    assert templating.render_inlined(_ENV, "acknowledgement.html.j2", context) == \
        _plain(_ENV, "acknowledgement.html.j2", context)


def test_ordinary_acknowledgements_are_inlined_by_their_shape():
    names = ["Dana Reader", "Sam", "Zoë Ünïcode", "O'Brien & Sons <ltd>"]
    for name in names:
        context = _ack_context(name, f"About {name}", [_Topic("t", "Grief", "https://column.example/g", "On loss")],
                               False)
        assert templating.render_inlined(_ENV, "acknowledgement.html.j2", context) == \
            _plain(_ENV, "acknowledgement.html.j2", context)
    context = _ack_context("Dana Reader", "One more", [_Topic("t", "Grief", "https://column.example/g", "On loss")],
                           False)
    values: list = []
    token = templating._VALUES.set(values)
    try:
        shape = _ENV.slot_environment.get_template("acknowledgement.html.j2").render(**context)
    finally:
        templating._VALUES.reset(token)
    assert "Dana Reader" not in shape and templating._SHAPES.get(shape), "the shape is kept, without the reader"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=_WORDS)
def test_every_kind_of_message_inlined_by_its_shape_is_the_whole_message_inlined(monkeypatch_words, words):
    # The design samples (acknowledgement, crisis, reply, confirmation,
    # notices, digest) with a reader's words in the reply's paragraphs.
    ours = render_messages(Config())
    with monkeypatch_words(words):
        ours_hostile = render_messages(Config())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compose, "render_inlined", _plain)
        theirs = render_messages(Config())
        with monkeypatch_words(words):
            theirs_hostile = render_messages(Config())
    assert {k: v.html for k, v in ours.items()} == {k: v.html for k, v in theirs.items()}
    assert {k: v.html for k, v in ours_hostile.items()} == {k: v.html for k, v in theirs_hostile.items()}


@pytest.fixture(scope="module")
def monkeypatch_words():
    import contextlib

    import design_samples

    @contextlib.contextmanager
    def put(words):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(design_samples, "SUBJECT", words)
            yield
    return put


def test_a_template_that_reworks_its_own_output_is_inlined_whole(tmp_path):
    # Filter blocks, captured blocks and macros see rendered text: a
    # placeholder there would be measured or changed instead of the value.
    (tmp_path / "odd.html.j2").write_text(
        "<html><head><style>p { color: red; } .x { margin: 0; }</style></head><body>"
        "{% filter upper %}<p>{{ name }}</p>{% endfilter %}"
        "{% set said %}<b>{{ name }}</b>{% endset %}<p class=\"x\">{{ said|length }} {{ said }}</p>"
        "{% macro m(v) %}<i>{{ v }}</i>{% endmacro %}<p>{{ m(name)|striptags|length }}</p></body></html>")
    env = template_environment(tmp_path)
    for name in ["dana", "Sam & Co", "zoë"]:
        assert templating.render_inlined(env, "odd.html.j2", {"name": name}) == _plain(env, "odd.html.j2", {"name": name})
    assert "odd.html.j2" in templating._UNSHAPED


def test_values_in_attributes_the_inliner_reads_take_the_plain_way(tmp_path):
    (tmp_path / "attrs.html.j2").write_text(
        "<html><head><style>.a { color: red; } #b { margin: 0; } p { padding: 0; }</style></head><body>"
        "<p class=\"{{ cls }}\" id=\"{{ ident }}\" style=\"{{ css }}\" title=\"{{ name }}\">{{ name }}</p></body></html>")
    env = template_environment(tmp_path)
    for cls, ident, css, name in [("a", "b", "color: blue", "x"), ("b", "a", "margin: 1px", "y"), ("a b", "", "", "z")]:
        context = {"cls": cls, "ident": ident, "css": css, "name": name}
        assert templating.render_inlined(env, "attrs.html.j2", context) == _plain(env, "attrs.html.j2", context)


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


@pytest.mark.parametrize("css, shaped", [
    ("p { color: red; } .x { margin: 0; } @media (max-width: 480px) { .x { margin: 1px !important; } }", True),
    ("a[href^='tel:'] { color: red; }", False),
    ("p:empty { display: none; }", False),
    ("@charset 'utf-8'; p:first-child { color: red; }", False),
])
def test_a_stylesheet_that_reads_attributes_or_content_takes_the_plain_way(tmp_path, css, shaped):
    (tmp_path / f"css{hash(css) & 0xffff}.html.j2").write_text(
        f"<html><head><style>{css}</style></head><body><p class=\"x\">{{{{ name }}}}</p><p></p>"
        "<a href=\"{{ link }}\">{{ name }}</a></body></html>")
    env = template_environment(tmp_path)
    name = f"css{hash(css) & 0xffff}.html.j2"
    for value, link in [("dana", "tel:1"), ("", "https://x.example"), ("Sam & Co", "tel:2")]:
        context = {"name": value, "link": link}
        assert templating.render_inlined(env, name, context) == _plain(env, name, context)
    assert any(shape for key, shape in templating._SHAPES.items() if css in key) is shaped
