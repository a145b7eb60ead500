"""Crisis detection for incoming letters.

A letter that shows signs of suicide, self-harm or danger from someone else
must be acknowledged with crisis resources first and its thread flagged urgent
for the columnist. This module only *decides*; it does no I/O and knows
nothing about threads or replies.

How it works
------------
1. The subject and body are normalised (Unicode NFKC, casefold, curly quotes
   and dashes made plain, invisible format characters dropped, whitespace
   collapsed) so patterns only have to be written once, in lower case with
   straight apostrophes.
2. Known idioms that would otherwise collide with a pattern ("killing myself
   at work", "cut myself off", "it hit me that ...") are blanked out.
   Idioms that cannot collide with any pattern ("this deadline is killing
   me", "dying to know") need no guard; the tests pin them down instead.
3. Curated regular expressions, one named list per category, are searched.
   Every category with at least one hit is reported. Only the expressions
   that could match are run: mailer/rules/crisis_index.py reads from each
   one the phrases every match contains, an expression that lacks them is
   skipped, and one that has them is tried only around where they occur.
   That is exact, never a guess: :func:`_assess_reference` does everything
   the plain way (every guard and pattern over the whole letter, the sign
   vocabulary walked from every word) and the tests hold :func:`assess` to
   it; most letters contain almost none of those phrases.

4. The warning-sign vocabulary (mailer/rules/signs.py) names the signs in
   the letter; strong ones count alone, weak ones in pairs within a sentence
   or two (:func:`judge_signs`, :data:`WEAK_WINDOW`).
5. A letter still calm but with a lone weak sign is scored by the word model
   (mailer/rules/crisis_model.py), which may add it, never clear it.

Policy: missing a real crisis is far worse than a false alarm, so patterns
are deliberately broad. Negation is not parsed ("I would never kill myself"
still fires), and third-person reports ("my daughter wants to kill herself",
"my sister's husband is violent") fire too. This is a keyword tool, English
only, not a clinical assessment; see docs/crisis.md.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from mailer.rules.crisis_index import NearPhrases, PatternIndex
from mailer.rules.crisis_patterns import DANGER_PATTERNS, GUARDS, SELF_HARM_PATTERNS, SUICIDE_PATTERNS
from mailer.rules.crisis_model import features_of, load_model
from mailer.rules.signs import load_vocabulary, tokens_of

__all__ = ["CrisisAssessment", "assess", "rules_urgent", "judge_signs", "warm_up", "CATEGORIES"]

SUICIDE = "suicide"
SELF_HARM = "self-harm"
DANGER = "danger-from-others"

#: Every signal name assess() can report, in the order it reports them.
CATEGORIES: tuple[str, ...] = (SUICIDE, SELF_HARM, DANGER)


@dataclass(frozen=True)
class CrisisAssessment:
    """Outcome of :func:`assess`.

    ``urgent`` is true when any category fired. ``signals`` names the
    categories that fired, in the order of :data:`CATEGORIES`; it never
    contains text from the letter, so it is safe to log.
    """

    urgent: bool
    signals: tuple[str, ...]
    signs: tuple[str, ...] = ()


#: Warning-sign categories that make a letter urgent on their own: the
#: Columbia screener's wish to be dead, thoughts of killing oneself, intent
#: and plan, any self-harm act, danger from another person, a child's abuse.
ALONE = frozenset({
    "wish-to-die", "suicidal-thoughts", "intent", "plan", "self-harm", "danger-from-others", "child-abuse",
})
#: Signs that are common in calm letters ("pills", "tonight", "goodbye",
#: "hopeless") and count only together: two different ones make a crisis.
WEAK = frozenset({
    "means", "time", "finality", "preparation", "burden", "hopelessness", "sudden-calm", "reckless-withdrawal",
    "resolve",
})
#: "Tonight" counts only beside what it could be the time of: a means, a
#: goodbye, affairs put in order, a sudden calm, a decision.
TIME_PARTNERS = frozenset({"means", "finality", "preparation", "sudden-calm", "resolve"})
#: Hedges ("not that I'd do anything", "lol") neither count nor cancel.
NEUTRAL = frozenset({"negation-hedge"})
#: The risk a sign that counts alone belongs to (the rest are suicide).
SIGN_RISK = {"self-harm": SELF_HARM, "danger-from-others": DANGER, "child-abuse": DANGER}


# ---------------------------------------------------------------------------
# Normalisation

# Apostrophes, primes and backticks people (and phones) use for "don't".
_APOSTROPHES = dict.fromkeys(map(ord, "\u2018\u2019\u201a\u201b\u2032\u02bc\u02bb`\u00b4"), "'")
_QUOTES = dict.fromkeys(map(ord, "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb"), '"')
# Hyphens and dashes, so "self\u2011harm" and "self-harm" look the same.
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"), "-")
_TRANSLATE = {**_APOSTROPHES, **_QUOTES, **_DASHES}


class _Fold(dict):
    """The translation table for ``str.translate``: plain quotes and dashes, no format characters.

    Zero-width and other format characters (Unicode category Cf) are dropped:
    a zero-width space inside "sui\u200bcidal" must not hide the word. The
    category of a character is looked up the first time it is seen and kept
    (up to a bound, so hostile text cannot grow the table without limit), so
    translating a letter is one pass in C rather than a Python loop.
    """

    def __missing__(self, codepoint: int):
        value = None if unicodedata.category(chr(codepoint)) == "Cf" else codepoint
        if len(self) < 8192:
            self[codepoint] = value
        return value


_FOLD = _Fold(_TRANSLATE)


def _normalise(text: str) -> str:
    """Return ``text`` folded into the one form the patterns are written for."""
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_FOLD).casefold()
    # str.split() and the pattern's \s agree on what whitespace is.
    return " ".join(text.split())


def _compile(patterns: tuple[tuple[str, str], ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Compile a named pattern list once, at import time."""
    return tuple((name, re.compile(rx)) for name, rx in patterns)


_GUARDS = _compile(GUARDS)
#: (category, ((pattern name, compiled pattern), ...)), in the order of CATEGORIES.
_Patterns = tuple[tuple[str, tuple[tuple[str, "re.Pattern[str]"], ...]], ...]
_PATTERNS: _Patterns = (
    (SUICIDE, _compile(SUICIDE_PATTERNS)),
    (SELF_HARM, _compile(SELF_HARM_PATTERNS)),
    (DANGER, _compile(DANGER_PATTERNS)),
)


@functools.cache
def _index() -> PatternIndex:
    """The prefilter for the guards and the patterns, numbered in that order, built on first use (~0.2 s).

    One index for both, so a letter is read into its words once: when no
    guard blanks anything out (nearly every letter), the patterns' candidates
    come from the same reading.
    """
    return PatternIndex([rx for _name, rx in GUARDS] + [rx for _category, rx in _NUMBERED_SOURCES])


#: (category, pattern source) of every pattern, in the order of CATEGORIES and of their lists.
_NUMBERED_SOURCES = tuple(
    (category, rx)
    for category, group in ((SUICIDE, SUICIDE_PATTERNS), (SELF_HARM, SELF_HARM_PATTERNS), (DANGER, DANGER_PATTERNS))
    for _name, rx in group
)


def warm_up() -> None:
    """Build the prefilter and read the sign vocabulary now rather than on the first letter."""
    _index()
    _searchers()
    load_vocabulary()
    load_model()


def _prepare(subject: str, text: str, *, prefilter: bool = True) -> str:
    """Normalise subject and body into one string and blank out guarded idioms."""
    return _read(subject, text, prefilter=prefilter)[0]


def _read(subject: str, text: str, *, prefilter: bool = True) -> tuple[str, set[int] | None]:
    """:func:`_prepare`, and the numbers of the patterns that could match the result (None: all of them)."""
    # The " | " separator keeps a phrase from being stitched together across
    # the subject/body boundary.
    combined = _normalise(subject or "") + " | " + _normalise(text or "")
    if not prefilter:
        for _name, guard in _GUARDS:
            combined = guard.sub(" ~ ", combined)
        return combined, None
    # A guard none of whose phrases is in the text cannot match: skipping it
    # leaves the text exactly as substituting would have. After a guard has
    # blanked something out the text is different, so it is read again.
    index = _index()
    candidates = index.candidates(combined)
    for number, (_name, guard) in enumerate(_GUARDS):
        if number in candidates:
            combined, blanked = guard.subn(" ~ ", combined)
            if blanked:
                candidates = index.candidates(combined)
    guards = len(_GUARDS)
    return combined, {number - guards for number in candidates if number >= guards}


def _candidates(candidates: set[int] | None) -> _Patterns:
    """Per category, the patterns numbered in ``candidates`` (all of them for None).

    Searching all 123 expressions over a letter took 5 ms. Every match of a
    pattern contains one of a few phrases that mailer/rules/crisis_index.py
    reads out of the pattern, and a pattern none of whose phrases is in the
    letter is not searched: the result is the same as searching them all
    (tests/test_crisis.py checks this), and most letters need only a few.
    """
    if candidates is None:
        return _PATTERNS
    selected, number = [], 0
    for category, patterns in _PATTERNS:
        chosen = []
        for entry in patterns:
            if number in candidates:
                chosen.append(entry)
            number += 1
        selected.append((category, tuple(chosen)))
    return tuple(selected)


def _explain(subject: str, text: str, *, prefilter: bool = True) -> list[tuple[str, str]]:
    """Return (category, pattern name) for every pattern that fires.

    For the benchmark, for debugging, and for the tests that compare the
    prefiltered search with the full one; :func:`assess` is the public API.
    """
    prepared, candidates = _read(subject, text, prefilter=prefilter)
    return [
        (category, name)
        for category, patterns in _candidates(candidates)
        for name, pattern in patterns
        if pattern.search(prepared)
    ]


def _sign_matches(prepared: str) -> dict[str, list[str]]:
    """Per warning-sign category, the phrases of the vocabulary found in ``prepared``."""
    words = tokens_of(prepared)
    return {
        category: [" ".join(words[start:end]) for start, end in spans]
        for category, spans in load_vocabulary().matches(words).items()
    }


#: How close (in words) two weak signs must be to count together: a sentence
#: or two. "Pills" in a paragraph about a prescription and "next week" in one
#: about a holiday are not a plan; in one sentence they may be.
WEAK_WINDOW = 40


def _weak_signs_meet(spans: dict[str, list[tuple[int, int]]]) -> bool:
    """Whether two weak signs that count together (:func:`judge_signs`) lie within :data:`WEAK_WINDOW` words."""
    weak = sorted(set(spans) & WEAK)
    for i, first in enumerate(weak):
        for second in weak[i + 1:]:
            if not judge_signs({first, second}):
                continue
            if any(abs(s1 - s2) <= WEAK_WINDOW for s1, _ in spans[first] for s2, _ in spans[second]):
                return True
    return False


def judge_signs(signs: set[str] | frozenset[str]) -> bool:
    """Whether a letter's warning-sign categories add up to a crisis (see :data:`ALONE`, :data:`WEAK`)."""
    if signs & ALONE:
        return True
    weak = signs & WEAK
    if len(weak - {"time"}) >= 2:
        return True
    return "time" in weak and bool(weak & TIME_PARTNERS)


@functools.cache
def _searchers() -> tuple[tuple[str, NearPhrases], ...]:
    """Every pattern with its category, numbered as the prefilter numbers them, searched near its phrases."""
    return tuple((category, NearPhrases(rx)) for category, rx in _NUMBERED_SOURCES)


def _rules(prepared: str, candidates: set[int], tokens: list[str]) -> tuple[set[str], frozenset[str]]:
    """The risks the curated patterns and the warning signs find in ``prepared``, and the signs found.

    ``candidates``: the numbers of the patterns that could match it (from
    :func:`_read`), ``tokens`` its :func:`tokens_of`. A category one pattern
    found needs no other of its patterns searched.
    """
    found: set[str] = set()
    searchers = _searchers()
    for number in sorted(candidates):
        category, searcher = searchers[number]
        if category not in found and searcher.search(prepared):
            found.add(category)
    return _with_signs(found, load_vocabulary().matches(tokens))


def _with_signs(found: set[str], spans: dict[str, list[tuple[int, int]]]) -> tuple[set[str], frozenset[str]]:
    """The risks the patterns ``found``, with those the warning signs' ``spans`` add; and the signs."""
    signs = frozenset(spans) - NEUTRAL
    if signs & ALONE or _weak_signs_meet(spans):
        strong = signs & ALONE
        found.update(SIGN_RISK.get(sign, SUICIDE) for sign in strong)
        if not strong:
            found.add(SUICIDE)  # the weak signs are all signs of suicide risk
    return found, signs


def rules_urgent(subject: str, text: str) -> bool:
    """Whether the patterns and signs alone, without the word model, find a crisis (for training and the bench)."""
    prepared, candidates = _read(subject, text)
    return bool(_rules(prepared, candidates, tokens_of(prepared))[0])


#: The sign reported when only the word model found the letter urgent.
MODEL_SIGN = "word-model"


def assess(subject: str, text: str) -> CrisisAssessment:
    """Decide whether a letter shows signs of suicide, self-harm or danger from someone else.

    ``subject`` and ``text`` are the letter's subject line and plain-text
    body. Urgent when a curated pattern fires, when a sign that counts
    alone is there, when weaker signs come together within a sentence or
    two (:func:`judge_signs`), or when the word model
    (:mod:`mailer.rules.crisis_model`) scores the letter above its threshold;
    the model only ever adds a letter, and reports it as suicide risk with
    the sign ``word-model``. ``signals`` lists the risks (from
    :data:`CATEGORIES`) in a fixed order, ``signs`` the warning-sign
    categories found; neither holds letter text. Biased towards recall:
    negation and hedging never cancel a sign. Never raises on str input.
    """
    prepared, candidates = _read(subject, text)
    tokens = tokens_of(prepared)
    found, signs = _rules(prepared, candidates, tokens)
    if not found and signs & _ASKS_MODEL:
        model = load_model()
        if model is not None and model.flags(features_of(prepared, signs, tokens=tokens)):
            found.add(SUICIDE)
            signs = signs | {MODEL_SIGN}
    return _assessment(found, signs)


#: The signs that send a letter the rules left calm to the word model: a weak one other than a time.
_ASKS_MODEL = WEAK - {"time"}


def _assessment(found: set[str], signs: frozenset[str]) -> CrisisAssessment:
    signals = tuple(category for category in CATEGORIES if category in found)
    return CrisisAssessment(urgent=bool(signals), signals=signals, signs=tuple(sorted(signs)))


def _assess_reference(subject: str, text: str) -> CrisisAssessment:
    """:func:`assess` done the plain, slow way, to check the fast one against (tests, bench).

    Every guard and every pattern is searched (no prefilter), the sign
    vocabulary is walked from every word it has a branch for, and the word
    model sums its weights as it did before :meth:`WordModel.flags` summed
    them once. :func:`assess` must return exactly this for every letter.
    """
    prepared = _prepare(subject, text, prefilter=False)
    found = {
        category for category, patterns in _PATTERNS if any(pattern.search(prepared) for _name, pattern in patterns)
    }
    found, signs = _with_signs(found, load_vocabulary().matches_walking_every_word(tokens_of(prepared)))
    if not found and signs & (WEAK - {"time"}):
        model = load_model()
        if model is not None:
            features = list(features_of(prepared, signs))
            evidence = sum(model.weights.get(f, 0.0) for f in features)
            if evidence > 0 and model.probability(features) > model.threshold:
                found.add(SUICIDE)
                signs = signs | {MODEL_SIGN}
    return _assessment(found, signs)
