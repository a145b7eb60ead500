"""assess() takes shortcuts; these tests hold it to the plain, slow way.

The fast path skips patterns and guards whose needed phrases are missing
(every piece a match needs, looked up by word and by pairs of neighbouring
words), walks the sign vocabulary only from words a phrase can begin at,
folds each word once per process, and sums the word model's weights once.
None of that may change a decision: for every letter, assess() must return
exactly what crisis._assess_reference() returns (every guard and pattern
searched, the vocabulary walked from every word, the model's weights summed
as before). Checked on every labelled and realistic letter we have (not the
blind set) and on letters hypothesis writes from the vocabulary's own words.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.rules import crisis
from mailer.rules.crisis_index import NearPhrases
from mailer.rules.crisis_patterns import DANGER_PATTERNS, GUARDS, SELF_HARM_PATTERNS, SUICIDE_PATTERNS
from mailer.rules.signs import FILLERS, NUMBER, fold, load_vocabulary, tokens_of

ROOT = Path(__file__).parent.parent
LETTER_FILES = {
    "tests/data/crisis_cases.toml": ("case", "text"),
    "tests/data/crisis_dev2.toml": ("case", "text"),
    "bench/data/relevance_dev2.toml": ("letter", "body"),
    "bench/data/relevance_letters.toml": ("letter", "body"),
}


def _letters(path: str) -> list[tuple[str, str, str]]:
    table, body = LETTER_FILES[path]
    with (ROOT / path).open("rb") as fh:
        return [(str(x["id"]), x.get("subject", ""), x[body]) for x in tomllib.load(fh)[table]]


@pytest.mark.parametrize("path", list(LETTER_FILES))
def test_assess_equals_the_reference_on_every_labelled_and_realistic_letter(path):
    letters = _letters(path)
    assert letters
    for letter_id, subject, text in letters:
        assert crisis.assess(subject, text) == crisis._assess_reference(subject, text), letter_id


def test_the_letters_reach_every_part_of_the_detector():
    # Otherwise the comparison above would prove little: patterns fire, signs
    # alone and in pairs decide, and the word model is asked and says yes.
    results = [crisis._assess_reference(s, t) for path in LETTER_FILES for _id, s, t in _letters(path)]
    assert any(crisis.MODEL_SIGN in r.signs for r in results)
    assert any(not r.urgent and r.signs for r in results)
    assert {signal for r in results for signal in r.signals} == set(crisis.CATEGORIES)


# -- letters written from the vocabulary's own words ------------------------------------

def _vocabulary_pieces() -> list[str]:
    """Every phrase and exclusion of every sign file, near phrases split into their parts, {n} as a number."""
    pieces = []
    for category in load_vocabulary().categories:
        for phrase in category.phrases + category.exclusions:
            pieces.extend(part.replace(NUMBER, "3") for part in phrase.split(" ... "))
    return sorted(set(pieces))


_PIECES = _vocabulary_pieces()
_WORDS = sorted({w for piece in _PIECES for w in re.findall(r"[\w']+", piece)})
_ALL_PATTERNS = [rx for _name, rx in SUICIDE_PATTERNS + SELF_HARM_PATTERNS + DANGER_PATTERNS + GUARDS]
_GLUE = st.sampled_from([
    " ", " ", " ", ", ", ". ", "\n\n", " and ", " my ", " the ", " I ", " a ", " thirty ", " 12 ", " lol ",
    " \u2014 ", "'", " don\u2019t ", " not ", " \u200b", "!", " | ",
])
_PIECE = st.one_of(
    st.sampled_from(_PIECES),
    st.sampled_from(_WORDS),
    st.sampled_from(sorted(FILLERS)),
    st.sampled_from(_PIECES).map(str.upper),
    st.sampled_from(_PIECES).map(lambda p: p.replace(" ", " just ", 1)),
)


@st.composite
def _letter(draw, max_pieces: int = 14) -> str:
    pieces = draw(st.lists(_PIECE, min_size=1, max_size=max_pieces))
    return "".join(piece + draw(_GLUE) for piece in pieces)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=st.one_of(st.just(""), _letter(max_pieces=3)), body=_letter())
def test_assess_equals_the_reference_on_letters_built_from_sign_phrases(subject, body):
    assert crisis.assess(subject, body) == crisis._assess_reference(subject, body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_assess_equals_the_reference_on_letters_mixing_pattern_matches_and_sign_phrases(data):
    parts = data.draw(st.lists(st.one_of(
        st.sampled_from(_ALL_PATTERNS).flatmap(lambda rx: st.from_regex(re.compile(rx), fullmatch=True)),
        _PIECE,
    ), min_size=1, max_size=8))
    body = " ".join(parts)
    assert crisis.assess("", body) == crisis._assess_reference("", body)


@settings(max_examples=300, deadline=None)
@given(body=_letter(max_pieces=30))
def test_the_vocabulary_finds_the_same_spans_walking_only_from_possible_starts(body):
    tokens = tokens_of(crisis._prepare("", body))
    vocabulary = load_vocabulary()
    assert vocabulary.matches(tokens) == vocabulary.matches_walking_every_word(tokens)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=200), _letter()))
def test_tokens_are_the_folded_runs_of_word_characters_without_apostrophes(text):
    expected = [fold(w) for w in re.findall(r"\w+", text.replace("'", ""))]
    assert tokens_of(text) == expected
    assert tokens_of(text) == expected  # the second time from the table of words already folded


@pytest.mark.parametrize("rx", _ALL_PATTERNS[: -len(GUARDS)])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_each_pattern_searched_near_its_phrases_answers_as_a_search_of_the_whole_letter(rx, data):
    pattern = re.compile(rx)
    parts = data.draw(st.lists(st.one_of(st.from_regex(pattern, fullmatch=True), _PIECE, _GLUE), max_size=8))
    text = crisis._normalise(" ".join(parts))
    assert NearPhrases(rx).search(text) == (pattern.search(text) is not None)
