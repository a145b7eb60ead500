"""The words of a letter as the topic index sees them: tokens, stop words, stems."""

from __future__ import annotations

import functools
import re

#: A word: letters and digits, no underscores.
WORD = re.compile(r"[^\W_]+", re.UNICODE)

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
