"""The warning-sign vocabulary: which sign categories a letter's words contain.

Each file in ``mailer/data/signs/`` is one category of warning sign (means,
time, finality, burden, wish to die, danger from another person, ...) with
the many ways readers say it, written from the lists crisis services publish
(the 988 Lifeline, AFSP, the Columbia scale, Campbell's Danger Assessment,
NSPCC guidance). A file has ``id``, ``label``, ``sources``, ``description``,
``phrases`` and optional ``exclusions``; ``{n}`` in a phrase stands for a
number ("30 pills", "thirty pills").

Phrases are matched as whole words. Text and phrases are read the same way:
apostrophes dropped ("don't" and "dont" are one word), every other
non-word character a word break ("self-harm" is "self harm"). An exclusion
is a phrase that is *not* the sign although it contains one ("see you
tomorrow" is no time for an act); a match that lies inside an exclusion of
its own category does not count. Exclusions never reach across categories.

A phrase with `` ... `` in it ("pills ... saved") is a *near* phrase: its two
parts may come in either order with up to :data:`NEAR_WINDOW` words between
them, so "I've been saving my pills" and "the pills I saved" both match
without listing every word order.

All phrases of all categories are kept in one trie of words, so a letter is
read once, word by word, whatever the size of the vocabulary; the trie is
walked only from the words a phrase can begin at (its first word followed by
its second, a number or a filler), found in bulk, and each word is folded
once per process.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from itertools import compress
from pathlib import Path

from mailer.rules.crisis_index import NonWordsToSpaces

__all__ = ["SignCategory", "Vocabulary", "load_vocabulary", "tokens_of", "SIGNS_DIR"]

SIGNS_DIR = Path(__file__).resolve().parent.parent / "data" / "signs"

#: The placeholder for a number in a phrase.
NUMBER = "{n}"
_NUMBER_WORDS = frozenset(
    "a an one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
    "hundred hundreds dozen dozens few couple several".split()
)
# Trie node keys for the end of a phrase and of an exclusion.
_END, _EXCLUDE = "\x00end", "\x00exclude"
#: How far apart (in words, either order) the two parts of a near phrase may be:
#: about a clause, so "pills" in one paragraph and "saved" in the next do not meet.
NEAR_WINDOW = 6
_NEAR = " ... "


#: Words that hedge or intensify without changing what is said ("I just want
#: to die", "I really can't go on"): inside a phrase, the letter may add them
#: between its words and the phrase still matches.
FILLERS = frozenset(
    "just really actually honestly literally seriously simply truly totally kinda so very definitely".split()
)


def fold(word: str) -> str:
    """One form for a word's inflections ("saved", "saving", "save": "sav"; "pills": "pill").

    Deliberately light: plural -s/-es, -ed and -ing, and a final -e. Phrase
    and letter are folded alike, so an exact match always still matches; the
    folding only lets a phrase written in one tense meet a letter in another.
    """
    if len(word) <= 4 or not word.isalpha():
        return word
    stem = word
    if word.endswith("ing") and len(word) >= 6:
        stem = word[:-3]
    elif word.endswith("ed") and not word.endswith("eed") and len(word) >= 5:
        stem = word[:-2]
    elif word.endswith("es") and len(word) >= 5 and not word.endswith(("ses", "xes")):
        stem = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        stem = word[:-1]
    if stem is not word and len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in "aeioulsz":
        stem = stem[:-1]  # "cutting" -> "cut", "stopped" -> "stop"
    if stem.endswith("e") and len(stem) >= 4:
        stem = stem[:-1]
    return stem


class _Folded(dict):
    """:func:`fold` of every word met so far, so a letter's words are folded by dictionary lookups.

    A word is folded the first time it is seen and kept (up to a bound, so
    hostile text cannot grow the table without limit). Folding is a pure
    function of the word, so keeping its answer changes nothing.
    """

    def __missing__(self, word: str) -> str:
        stem = fold(word)
        if len(self) < 32768:
            self[word] = stem
        return stem


_FOLDED = _Folded()


# Splitting on it gives the runs of \w, as re.findall(r"\w+") would, in about a third of the time;
# apostrophes are dropped ("don't" is "dont").
_SPACES = NonWordsToSpaces({ord("'"): None})


def tokens_of(text: str) -> list[str]:
    """The words of already-normalised ``text`` as the vocabulary sees them, folded."""
    return list(map(_FOLDED.__getitem__, text.translate(_SPACES).split()))


def _phrase_tokens(phrase: str) -> tuple[str, ...]:
    # "{n}" must survive the word split, so it is swapped for a word first.
    words = tokens_of(phrase.casefold().replace(NUMBER, " zznumberzz "))
    return tuple(NUMBER if w == "zznumberzz" else w for w in words)


def _is_number(token: str) -> bool:
    return token.isdigit() or token in _NUMBER_WORDS


@dataclass(frozen=True)
class SignCategory:
    """One category of warning sign, as read from its data file."""

    id: str
    label: str
    description: str
    phrases: tuple[str, ...]
    exclusions: tuple[str, ...]


class Vocabulary:
    """Every category's phrases in one trie of words: which categories does a text contain?"""

    def __init__(self, categories: list[SignCategory]) -> None:
        self.categories = tuple(categories)
        self._trie: dict = {}
        # Near phrases: each part is filed in the trie under a key of its own,
        # and (category, key of part one, key of part two) is kept here.
        self._near: list[tuple[str, str, str]] = []
        for category in categories:
            for phrase in category.phrases:
                if _NEAR in phrase:
                    first, second = (part.strip() for part in phrase.split(_NEAR, 1))
                    keys = (f"\x01{len(self._near)}a", f"\x01{len(self._near)}b")
                    for key, part in zip(keys, (first, second)):
                        self._file(_phrase_tokens(part), _END, key)
                    self._near.append((category.id, *keys))
            for kind, phrases in ((_END, category.phrases), (_EXCLUDE, category.exclusions)):
                for phrase in phrases:
                    if _NEAR in phrase:
                        continue
                    words = _phrase_tokens(phrase)
                    if not words:
                        continue  # an emoji or punctuation only: nothing a word match can find
                    node = self._trie
                    for word in words:
                        node = node.setdefault(word, {})
                    node.setdefault(kind, set()).add(category.id)
        #: The key of a near phrase's first part -> the numbers of the near phrases it begins.
        self._near_by_first: dict[str, list[int]] = {}
        for number, (_category, first, _second) in enumerate(self._near):
            self._near_by_first.setdefault(first, []).append(number)
        # What a phrase can begin with: a first word that is a whole phrase,
        # or a first word and what may follow it (a second word, a number,
        # or a filler stepped over). Nothing else can start a match.
        self._complete_at_first = frozenset(
            key for key, node in self._trie.items() if _END in node or _EXCLUDE in node
        )
        self._first_pairs = frozenset(
            (key, second) for key, node in self._trie.items() for second in node if second not in (_END, _EXCLUDE)
        )
        self._first_word_pairs = frozenset(
            {(key, second) for key, second in self._first_pairs if NUMBER not in (key, second)}
            | {(key, filler) for key in self._trie if key != NUMBER for filler in FILLERS}
        )

    def _file(self, words: tuple[str, ...], kind: str, key: str) -> None:
        """File one phrase's words in the trie under ``key``."""
        if not words:
            return
        node = self._trie
        for word in words:
            node = node.setdefault(word, {})
        node.setdefault(kind, set()).add(key)

    def _walk(self, tokens: list[str], start: int):
        """Yield (kind, category ids, end) for every phrase that begins at ``start``."""
        stack = [(self._trie, start)]
        while stack:
            node, at = stack.pop()
            for kind in (_END, _EXCLUDE):
                if kind in node:
                    yield kind, node[kind], at
            if at >= len(tokens):
                continue
            token = tokens[at]
            child = node.get(token)
            if child is not None:
                stack.append((child, at + 1))
            if NUMBER in node and _is_number(token):
                stack.append((node[NUMBER], at + 1))
            if token in FILLERS and node is not self._trie and child is None:
                stack.append((node, at + 1))  # "I want to just die" reads as "I want to die"

    def matches(self, tokens: list[str]) -> dict[str, list[tuple[int, int]]]:
        """Per category, the (start, end) word spans of its phrases that count in ``tokens``.

        Only the words a phrase can begin at are walked from (:meth:`_starts`):
        the same spans, in the same order, as walking from every word
        (:meth:`matches_walking_every_word`, kept to check that against).
        """
        starts, numbers = self._starts(tokens)
        return self._collect(tokens, starts, numbers=numbers)

    def matches_walking_every_word(self, tokens: list[str]) -> dict[str, list[tuple[int, int]]]:
        """:meth:`matches` the slow, plain way: the trie walked from every word it has a branch for,
        and every near phrase looked at."""
        trie = self._trie
        return self._collect(tokens, [
            start for start, token in enumerate(tokens)
            if token in trie or (NUMBER in trie and _is_number(token))
        ], plain=True)

    def _starts(self, tokens: list[str]) -> tuple[list[int], set[str]]:
        """The positions a phrase could begin at, in order (where its first word and what follows are);
        and the tokens that are numbers.

        A walk from any other position finds nothing: every phrase needs its
        first word (or a number, for ``{n}``) and then either ends there, or
        goes on with its second word, a number, or a filler the walk steps
        over. Words are checked against those pairs in bulk (``map`` over
        sets), since a letter's few hundred words are mostly no start.
        """
        positions = range(len(tokens))
        following = tokens[1:]
        following.append("")  # no word: only a phrase complete in one word can start at the end
        starts = set(compress(positions, map(self._complete_at_first.__contains__, tokens)))
        starts.update(compress(positions, map(self._first_word_pairs.__contains__, zip(tokens, following))))
        distinct = set(tokens)
        numbers = (distinct & _NUMBER_WORDS).union(filter(str.isdigit, distinct))
        if numbers:
            # Phrases with {n} at their first or second word: a number begins them, or follows their first word.
            trie, pairs, complete = self._trie, self._first_pairs, self._complete_at_first
            last = len(tokens) - 1
            for at in compress(positions, map(numbers.__contains__, tokens)):
                if at > 0 and (tokens[at - 1], NUMBER) in pairs:
                    starts.add(at - 1)
                if NUMBER in trie:
                    after = tokens[at + 1] if at < last else None
                    if NUMBER in complete or (after is not None and (
                            (NUMBER, after) in pairs or after in FILLERS or (after in numbers and (NUMBER, NUMBER) in pairs))):
                        starts.add(at)
        return sorted(starts), numbers

    def _collect(
        self, tokens: list[str], starts, *, plain: bool = False, numbers: set[str] | None = None,
    ) -> dict[str, list[tuple[int, int]]]:
        """Per category, the spans of the phrases found by walking the trie from each of ``starts``.

        ``numbers``: the tokens that are numbers. The plain way walks with
        :meth:`_walk`; otherwise the same walk is written out here (no
        generator, numbers looked up in ``numbers``), with the same spans in
        the same order.
        """
        found: dict[str, list[tuple[int, int]]] = {}
        excluded: dict[str, list[tuple[int, int]]] = {}
        if plain or numbers is None:
            for start in starts:
                for kind, ids, end in self._walk(tokens, start):
                    target = found if kind == _END else excluded
                    for category in ids:
                        target.setdefault(category, []).append((start, end))
        else:
            trie, size = self._trie, len(tokens)
            for start in starts:
                stack = [(trie, start)]
                while stack:
                    node, at = stack.pop()
                    ids = node.get(_END)
                    if ids is not None:
                        for category in ids:
                            found.setdefault(category, []).append((start, at))
                    ids = node.get(_EXCLUDE)
                    if ids is not None:
                        for category in ids:
                            excluded.setdefault(category, []).append((start, at))
                    if at >= size:
                        continue
                    token = tokens[at]
                    child = node.get(token)
                    if child is not None:
                        stack.append((child, at + 1))
                    if token in numbers and NUMBER in node:
                        stack.append((node[NUMBER], at + 1))
                    if child is None and token in FILLERS and node is not trie:
                        stack.append((node, at + 1))  # as in _walk: a filler is stepped over
        # Only the near phrases whose first part was found (all of them, the
        # plain way), in their order, which the spans keep.
        near = self._near
        looked_at = range(len(near)) if plain else sorted(
            n for key in self._near_by_first.keys() & found.keys() for n in self._near_by_first[key]
        )
        for number in looked_at:
            category, first, second = near[number]
            if first in found and second in found:
                for s1, e1 in found[first]:
                    for s2, e2 in found[second]:
                        if s2 - e1 <= NEAR_WINDOW and s1 - e2 <= NEAR_WINDOW:
                            found.setdefault(category, []).append((min(s1, s2), max(e1, e2)))
        result = {}
        for category, spans in found.items():
            if category.startswith("\x01"):
                continue  # one part of a near phrase, not a sign by itself
            blocked = excluded.get(category, ())
            kept = [(s, e) for s, e in spans if not any(bs <= s and e <= be for bs, be in blocked)]
            if kept:
                result[category] = kept
        return result


def read_category(path: Path) -> SignCategory:
    """Read one sign file; a missing key or a wrong type names the file and the key."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    for key, kind in (("id", str), ("label", str), ("phrases", list)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"{path.name}: '{key}' is missing or not a {kind.__name__}")
    return SignCategory(
        id=data["id"],
        label=data["label"],
        description=data.get("description", ""),
        phrases=tuple(str(p) for p in data["phrases"]),
        exclusions=tuple(str(p) for p in data.get("exclusions", ())),
    )


@functools.cache
def load_vocabulary(directory: Path = SIGNS_DIR) -> Vocabulary:
    """The vocabulary of every ``*.toml`` in ``directory``, read once per process."""
    return Vocabulary([read_category(path) for path in sorted(directory.glob("*.toml"))])
