"""Tests for mailer.prefilter: the phrases a pattern cannot match without.

The one property that matters: a pattern that matches a text is always among
the index's candidates for it. Skipping more or fewer patterns is speed only.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.rules.crisis_index import NearPhrases, PatternIndex, required_phrases, required_pieces, words_of

# Patterns chosen to exercise each part of the analysis.
TRICKY = {
    "plain words": r"\bkill myself\b",
    "optional letter after a word": r"\bmy arms?\b",
    "prefix shared by alternatives": r"\boverdos\w*\b|\bod'?(?:d|ed|ing) on\b",
    "optional space inside a word": r"\bkill(?:ing)? ?my ?self\b",
    "lookbehind and lookahead": r"(?<!\d)(?<!\d )\bkms\b(?! ?[:-])",
    "negative lookahead after the words": r"\btake my life\b(?! back\b)",
    "repeat of a group": r"\b(?:ha){2,3}\b",
    "exact repeat": r"\b(?:no ){2}way\b",
    "class of letters": r"\bfianc[eé]e?\b",
    "wildcard between words": r"\brope\b.{0,40}?\b(?:garage|shed)\b",
    "word then anything": r"\bsuicid\w*",
    "case-insensitive group": r"(?i:kill) me\b",
    "backreference": r"\b(\w+) and \1 again\b",
    "anchors": r"^i am done$",
    "apostrophes": r"\bcan'?t go on\b",
    "hyphen or space": r"\bself[- ]?harm\b",
    "long alternation": r"\b(?:" + "|".join(f"w{i:02d}" for i in range(90)) + r") now\b",
}


def test_phrases_of_a_plain_pattern_are_its_words():
    assert required_phrases(r"\bkill myself\b") == {"kill myself": frozenset({"kill", "myself"})}


def test_a_word_that_may_go_on_is_not_a_whole_word():
    phrases = required_phrases(r"\bmy arms?\b")
    assert phrases == {"my arm": frozenset({"my", "arm"}), "my arms": frozenset({"my", "arms"})}


@pytest.mark.parametrize("pattern", [r".*", r"a?", r"(?i)kill me", r"[^x]+", r"\w+"],
                         ids=["anything", "maybe nothing", "ignore case", "negated class", "any word"])
def test_patterns_it_cannot_vouch_for_are_always_candidates(pattern):
    assert required_phrases(pattern) is None
    assert 0 in PatternIndex([pattern]).candidates("nothing in common")


def test_a_case_insensitive_part_counts_for_nothing_but_the_rest_does():
    assert required_phrases(r"(?i:kill) me\b") == {" me": frozenset({"me"})}
    assert 0 in PatternIndex([r"(?i:kill) me\b"]).candidates("KILL me")


def test_every_piece_a_match_needs_is_checked_not_only_the_strongest():
    # "self" and one of the endings are both needed: "self-care" has the one
    # and not the other, so the pattern is not searched.
    pattern = r"\bself[- ]?(?:harm\w*|injur\w*)\b"
    assert [set(piece) for piece in required_pieces(pattern)] == [{"harm", "injur"}, {"self"}]
    assert PatternIndex([pattern]).candidates("self-care and a harmless joke") == {0}
    assert PatternIndex([pattern]).candidates("self-care, nothing else") == set()
    assert PatternIndex([pattern]).candidates("no harm done") == set()


def test_a_text_without_the_phrases_skips_the_pattern():
    index = PatternIndex([r"\bkill myself\b", r"\bnoose\b"])
    assert index.candidates("i could kill for a coffee, said myself") == set()
    assert index.candidates("i want to kill myself") == {0}


@pytest.mark.parametrize("rx", list(TRICKY.values()), ids=list(TRICKY))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_pattern_that_matches_is_always_a_candidate(rx, data):
    pattern = re.compile(rx)
    text = data.draw(st.from_regex(pattern) | st.just(""))  # "" keeps a hard pattern from being unsatisfiable
    if pattern.search(text):
        assert 0 in PatternIndex([rx]).candidates(text)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=200))
def test_words_of_are_the_runs_of_word_characters(text):
    assert words_of(text) == set(re.findall(r"\w+", text))


# -- searching a pattern only near its phrases (NearPhrases) ----------------------------

def test_a_match_near_the_cut_made_by_a_window_is_not_taken_for_a_real_one():
    # Searching around the first "a" cuts the text after "a ab": there "ab"
    # would end the text and satisfy (?=$). It does not in the letter.
    searcher = NearPhrases(r"\ba\w?(?=$)")
    assert searcher.phrases
    assert not searcher.search("a ab cd")
    assert searcher.search("a ab")
    assert searcher.search("xx ab")


def test_a_pattern_without_a_bound_on_its_length_is_searched_whole():
    searcher = NearPhrases(r"\boverdos\w*\b")
    assert not searcher.phrases
    assert searcher.search("she overdosed") and not searcher.search("no dose")


_NEAR = {**TRICKY, **{
    "lookahead that reads on": r"\bcan'?t go on(?= ?(?:like this|any ?more|[.,!?;|]|$))",
    "negative lookahead after": r"\b(?:take|taking) my life\b(?! (?:back|in|into)\b)",
    "gap between two needed words": r"\bpills\b.{0,20}?\bvodka\b",
    "lookbehind before": r"(?<!not )\bhurt me\b",
}}


@pytest.mark.parametrize("rx", list(_NEAR.values()), ids=list(_NEAR))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_searching_near_the_phrases_finds_what_searching_everything_finds(rx, data):
    pattern = re.compile(rx)
    pieces = st.one_of(st.from_regex(pattern), st.sampled_from(["", " ", ".", "\n", "x", "my", "not ", "go on", " like"]),
                       st.text(max_size=6))
    text = "".join(data.draw(st.lists(pieces, max_size=6)))
    assert NearPhrases(rx).search(text) == (pattern.search(text) is not None)
