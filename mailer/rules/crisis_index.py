"""The phrases a regular expression cannot match without, to skip it cheaply.

``re`` tries a pattern at every position of a text, so a hundred patterns over
a 1.5 kB letter cost milliseconds even when none of them can match. Nearly
every pattern needs one of a few phrases ("kill myself", "noose", "afraid
of my husband"): :func:`required_pieces` reads a pattern's parse tree and
returns sets of phrases such that every match contains at least one phrase
of each set ("kill" and "myself"). A text that lacks every phrase of one set
cannot match, and the pattern need not be run. :class:`PatternIndex` files
the phrases under their words and pairs of neighbouring words, so that a
text is read once into its words and only the phrases whose words are there
are looked for. :class:`NearPhrases` runs a pattern that may match only
around the places where such a phrase occurs, rather than over the whole
letter. Every shortcut gives the answers of running every pattern over the
whole text (tests/test_prefilter.py, tests/test_crisis_fast_path.py).

The analysis is conservative: whatever it does not understand (classes with
categories, negations, backreferences, case-insensitive or ASCII flags)
counts as "could be anything", which can only make the phrases fewer and
shorter (weaker), never wrong. It reads ``re``'s own parser (``re._parser``),
so a new Python may change what it sees; tests/test_crisis.py checks the
phrases of every crisis pattern against generated matches and the labelled
letters, which would catch that.
"""

from __future__ import annotations

import functools
import re
from re import _constants as _c
from re import _parser as _sre_parse

__all__ = ["PatternIndex", "required_phrases", "required_pieces", "words_of", "word_sequence", "NearPhrases", "NonWordsToSpaces", "COMMON_WORDS"]

#: Exact alternatives are multiplied out up to this many strings, then cut.
_MAX_EXACT = 64

#: Stands for ``\b`` inside the exact strings while they are built (zero-width).
_BOUNDARY = "\x00"

_WORD = re.compile(r"\w+")

#: Words too common to be the one a phrase is looked up by; only speed
#: depends on this list.
COMMON_WORDS = frozenset(
    "the and for are was you not but all any can had her him his how its our out own "
    "she way who why yes get got see off over end one now into with that this "
    "have what about them they from will would been just your when there their were "
    "like some more than then only also after could make know things thing being want "
    "time back even still very much here well going feel ever tell left take keep".split()
)


class NonWordsToSpaces(dict):
    """``str.translate`` table: every character that is not ``\\w`` becomes a space.

    ``\\w`` is ``str.isalnum()`` or "_", as in ``re``. Characters are looked up
    once and kept (up to a bound, so hostile text cannot grow the table).
    """

    def __missing__(self, codepoint: int) -> int:
        char = chr(codepoint)
        value = codepoint if char.isalnum() or char == "_" else 32
        if len(self) < 8192:
            self[codepoint] = value
        return value


_SPACES = NonWordsToSpaces()


def words_of(text: str) -> set[str]:
    """The words of ``text`` as the index sees them: maximal runs of ``\\w``.

    The same set as ``set(re.findall(r"\\w+", text))``, in about 60% of the time.
    """
    return set(text.translate(_SPACES).split())


def word_sequence(text: str) -> list[str]:
    """The maximal runs of ``\\w`` in ``text``, in order: ``re.findall(r"\\w+", text)``."""
    return text.translate(_SPACES).split()


class PatternIndex:
    """Regular expressions indexed by the phrases they need: which could match a text?

    For each pattern the analysis finds sets of phrases such that every match
    contains a phrase of each set ("kill" and "myself"; "take my life" or
    "take his own life" ...). A pattern is filed under its strongest set, each
    phrase of it under a key a text cannot lack if it has the phrase: two
    whole words that follow each other in the phrase ("take my"), else its
    least common whole word, else nothing (``overdos`` in
    ``\\boverdos\\w*\\b``: looked for in every text). A text is read once into
    its words (:func:`word_sequence`), and only the phrases filed under its
    words and pairs of neighbouring words are looked for. When one occurs,
    the pattern's other sets are checked too. A pattern that lacks every
    phrase of one of its sets cannot match and is left out.
    """

    def __init__(self, patterns: list[str] | tuple[str, ...], common: frozenset[str] = COMMON_WORDS) -> None:
        #: Patterns the analysis found nothing for: always candidates.
        self.unindexed: tuple[int, ...] = ()
        #: (pattern, its phrases without a whole word as a piece) for phrases looked for in every text.
        self.scanned: list[tuple[int, _Piece]] = []
        #: word -> (pattern, all whole words of the phrase, phrase)
        self.by_word: dict[str, list[tuple[int, frozenset[str], str]]] = {}
        #: (word, next word) -> (pattern, all whole words of the phrase, phrase)
        self.by_pair: dict[tuple[str, str], list[tuple[int, frozenset[str], str]]] = {}
        #: pattern -> its other sets of phrases, each as a piece (see :func:`_piece`)
        self.also_needed: dict[int, tuple[_Piece, ...]] = {}

        def rarity(word: str) -> tuple[bool, int, str]:
            return (word not in common, len(word), word)

        unindexed = []
        for index, pattern in enumerate(patterns):
            marked = _required_marked(pattern)
            if not marked:
                unindexed.append(index)
                continue
            pieces = [_phrases(piece) for piece in marked]
            pairs_of = _neighbour_words(marked[0])
            scanned = {}
            for phrase, words in pieces[0].items():
                entry = (index, words, phrase)
                if pairs_of[phrase]:
                    pair = max(pairs_of[phrase], key=lambda p: (min(rarity(p[0]), rarity(p[1])), p))
                    self.by_pair.setdefault(pair, []).append(entry)
                elif words:
                    self.by_word.setdefault(max(words, key=rarity), []).append(entry)
                else:
                    scanned[phrase] = words
            if scanned:
                self.scanned.append((index, _piece(scanned)))
            if len(pieces) > 1:
                # Cheapest first: the fewer phrases that must be looked for in the text, the better.
                others = [_piece(piece) for piece in pieces[1:]]
                self.also_needed[index] = tuple(sorted(others, key=lambda p: (sum(not e[0] for e in p[1]), len(p[1]))))
        self.unindexed = tuple(unindexed)
        self._pair_keys = frozenset(self.by_pair)
        self._word_keys = frozenset(self.by_word)
        fragments = {run for _index, (_gate, entries) in self.scanned for e in entries for run in e[2]}
        fragments.update(run for pieces in self.also_needed.values() for _gate, entries in pieces for e in entries for run in e[2])
        self._fragments_in = _FragmentsIn(frozenset(fragments))

    def candidates(self, text: str, words: set[str] | None = None, sequence: list[str] | None = None) -> set[int]:
        """Indexes of the patterns that could match ``text``.

        ``sequence`` and ``words``: its :func:`word_sequence` and the set of
        it, when the caller has them already.
        """
        if sequence is None:
            sequence = word_sequence(text)
        if words is None:
            words = set(sequence)
        found = set(self.unindexed)
        ruled_out: set[int] = set()
        also_needed = self.also_needed
        by_word, by_pair = self.by_word, self.by_pair
        # The runs of \w from phrases looked for in every text that are inside some word of this one.
        inside = set().union(*map(self._fragments_in.__getitem__, words))
        filed = [by_word[word] for word in words & self._word_keys]
        filed += [by_pair[pair] for pair in self._pair_keys.intersection(zip(sequence, sequence[1:]))]
        for entries in filed:
            for index, needed, phrase in entries:
                if index not in found and index not in ruled_out and needed <= words and phrase in text:
                    if index not in also_needed or _each_present(also_needed[index], text, words, inside):
                        found.add(index)
                    else:
                        ruled_out.add(index)
        for index, piece in self.scanned:
            if index not in found and index not in ruled_out and _each_present((piece,), text, words, inside):
                if index not in also_needed or _each_present(also_needed[index], text, words, inside):
                    found.add(index)
                else:
                    ruled_out.add(index)
        return found


#: A set of phrases of which a text must have one: (gate, ((whole words, phrase, runs, exact), ...)).
#: ``runs``: the phrase's runs of \w long enough to look up inside the text's words; ``exact``: the
#: phrase is one such run, so finding it inside a word is finding the phrase. ``gate``: the longest
#: run of every phrase (None when a phrase has none): a text without any of them has none of the phrases.
_Piece = tuple[frozenset[str] | None, tuple[tuple[frozenset[str], str, frozenset[str], bool], ...]]


def _piece(phrases: dict[str, frozenset[str]]) -> _Piece:
    """One set of phrases (phrase -> its whole words) made ready for :func:`_each_present`."""
    entries = []
    for phrase, words in phrases.items():
        runs = frozenset(run for run in _WORD.findall(phrase) if len(run) >= _MIN_FRAGMENT)
        entries.append((words, phrase, runs, runs == {phrase}))
    # A phrase with whole words is mostly ruled out by the set of words; one without must be looked for.
    entries.sort(key=lambda e: (not e[0], e[1]))
    gate = frozenset(max(e[2], key=lambda r: (len(r), r)) for e in entries) if all(e[2] for e in entries) else None
    return gate, tuple(entries)


def _each_present(pieces: tuple[_Piece, ...], text: str, words: set[str], inside: set[str]) -> bool:
    """Whether ``text`` has a phrase of each of ``pieces`` (``words``: its words, ``inside``: the runs inside them)."""
    for gate, entries in pieces:
        if gate is not None and gate.isdisjoint(inside):
            return False
        if not any(
            needed <= words and runs <= inside and (exact or phrase in text) for needed, phrase, runs, exact in entries
        ):
            return False
    return True


#: Runs of \w shorter than this are not looked up inside the text's words.
_MIN_FRAGMENT = 3


class _FragmentsIn(dict):
    """word -> the fragments (runs of \\w from phrases) that occur inside it; filled as words are met.

    A run of ``\\w`` in a phrase lies, wherever the phrase occurs, inside one
    word of the text, so a phrase whose runs are not all inside the text's
    words is not in the text, and a phrase that is a single run is in it
    exactly when that run is inside one of its words. Looking that up per word
    (kept, up to a bound) replaces a search of the whole letter per phrase.
    """

    def __init__(self, fragments: frozenset[str]) -> None:
        super().__init__()
        self.fragments = fragments
        self.longest = max(map(len, fragments), default=0)

    def __missing__(self, word: str) -> frozenset[str]:
        fragments, longest, size = self.fragments, self.longest, len(word)
        if size * min(size, longest) <= len(fragments):
            inside = frozenset(
                word[i:j] for i in range(size) for j in range(i + _MIN_FRAGMENT, min(size, i + longest) + 1)
                if word[i:j] in fragments
            )
        else:
            inside = frozenset(fragment for fragment in fragments if fragment in word)
        if len(self) < 32768:
            self[word] = inside
        return inside


def required_phrases(pattern: str) -> dict[str, frozenset[str]] | None:
    """Phrases of which every match of ``pattern`` contains one, each with its whole words.

    A whole word is a run of ``\\w`` that the pattern ends on both sides (with
    ``\\b``, a space or punctuation), so any text the phrase occurs in has it
    among its :func:`words_of`. None when nothing useful was found (the
    pattern may match anything, or the empty string, or uses something the
    analysis does not follow). This is the strongest of :func:`required_pieces`.
    """
    pieces = required_pieces(pattern)
    return pieces[0] if pieces else None


def required_pieces(pattern: str) -> list[dict[str, frozenset[str]]]:
    """Every set of phrases the analysis found for ``pattern``, strongest first; each is needed.

    Every match of the pattern contains a phrase of *each* set ("kill" from
    one and "myself" from another), so a text that lacks all phrases of any
    one set cannot match. Empty when nothing useful was found.
    """
    return [_phrases(piece) for piece in _required_marked(pattern)]


def _phrases(marked: frozenset[str]) -> dict[str, frozenset[str]]:
    """One piece's phrases without their ``\\b`` markers, each with its whole words."""
    phrases: dict[str, set[str]] = {}
    for item in marked:
        text = item.replace(_BOUNDARY, "")
        words = _whole_words(item)
        # The same text with \b in different places: only words all agree on.
        phrases[text] = phrases[text] & words if text in phrases else words
    # A phrase that contains another is not needed when the other's words are
    # among its own: wherever it occurs, the other occurs with those words.
    # ("my arms" does not make "my arm" redundant: there "arm" is no word.)
    return {
        text: frozenset(words) for text, words in phrases.items()
        if not any(other != text and other in text and phrases[other] <= words for other in phrases)
    }


def _whole_words(phrase: str) -> set[str]:
    """The runs of ``\\w`` in a marked phrase that are whole words wherever it occurs."""
    return {run for run, whole in _runs(phrase) if whole}


@functools.lru_cache(maxsize=65536)
def _runs(phrase: str) -> tuple[tuple[str, bool], ...]:
    """The runs of ``\\w`` in a marked phrase, in order, each with whether it is a whole word.

    Kept: choosing the strongest piece asks about the same phrases many times.
    """
    text = phrase.replace(_BOUNDARY, "")
    edges, offset = set(), 0
    for ch in phrase:
        if ch == _BOUNDARY:
            edges.add(offset)
        else:
            offset += 1
    runs = []
    for run in _WORD.finditer(text):
        start, end = run.span()
        # Something in the phrase ends the word on each side: a non-word
        # character (the run is maximal) or a \b asserted right there.
        runs.append((run.group(), (start > 0 or 0 in edges) and (end < len(text) or end in edges)))
    return tuple(runs)


def _neighbour_words(marked: frozenset[str]) -> dict[str, frozenset[tuple[str, str]]]:
    """Per phrase of one piece, the pairs of whole words that follow each other in it.

    Between two neighbouring runs of a phrase there is only what is not
    ``\\w``, so where the phrase occurs in a text, two that are whole words are
    also neighbours in the text's :func:`word_sequence`. A phrase marked
    several ways keeps only the pairs every way agrees on.
    """
    pairs: dict[str, set[tuple[str, str]]] = {}
    for item in marked:
        runs = _runs(item)
        found = {(a, b) for (a, whole_a), (b, whole_b) in zip(runs, runs[1:]) if whole_a and whole_b}
        text = item.replace(_BOUNDARY, "")
        pairs[text] = pairs[text] & found if text in pairs else found
    return {text: frozenset(found) for text, found in pairs.items()}


@functools.lru_cache(maxsize=1024)
def _parsed(pattern: str):
    """``re``'s parse tree of ``pattern``, read once (the analysis only reads it)."""
    return _sre_parse.parse(pattern)


@functools.lru_cache(maxsize=1024)
def _required_marked(pattern: str) -> tuple[frozenset[str], ...]:
    """Sets of phrases (with ``\\b`` markers), strongest first, each of which every match contains one of.

    Kept: the index and :class:`NearPhrases` both ask about the same patterns.
    """
    try:
        parsed = _parsed(pattern)
    except re.error:
        return ()
    if parsed.state.flags & (re.IGNORECASE | re.ASCII | re.LOCALE):
        return ()
    _exact, pieces = _sequence(parsed)
    useful = {frozenset(piece) for piece in pieces if _useful(piece)}
    return tuple(sorted(useful, key=lambda piece: (_strength(piece), sorted(piece)), reverse=True))


class NearPhrases:
    """A pattern searched only around the places where a phrase every match contains occurs.

    ``re`` tries a pattern at every position of a letter. When every match is
    at most ``width`` characters long and contains one of a few phrases, a
    match can only start between ``width`` characters before the end of an
    occurrence and its start; only there is the pattern tried, with the text
    cut off where nothing the pattern can look at (its lookaheads included)
    reaches. A match found there counts only if it starts no later than the
    occurrence (further on, the cut could have made it), so the answer is
    the same as searching the whole letter. A pattern without such a bound
    or phrases, or a letter where the phrases occur often, is searched whole.
    """

    #: Longest reach (match and lookaheads, in characters) worth searching around phrases.
    MAX_REACH = 400
    #: Beyond this many occurrences a single search of the whole letter is cheaper.
    MAX_OCCURRENCES = 8

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.phrases: tuple[str, ...] = ()
        self.width = self.reach = 0
        marked = _required_marked(pattern)
        if not marked:
            return
        parsed = _parsed(pattern)
        width, ahead = parsed.getwidth()[1], _lookahead_width(parsed)
        if ahead is not None and width + ahead <= self.MAX_REACH:
            self.phrases = tuple(sorted(_phrases(marked[0])))
            # +2: a \b or $ just after the last character looked at still sees the real text.
            self.width, self.reach = width, width + ahead + 2

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in ``text`` (``re.search``, searched less)."""
        if not self.phrases:
            return self.pattern.search(text) is not None
        places = []
        for phrase in self.phrases:
            at = text.find(phrase)
            while at >= 0:
                places.append((at, len(phrase)))
                if len(places) > self.MAX_OCCURRENCES:
                    return self.pattern.search(text) is not None
                at = text.find(phrase, at + 1)
        search, width, reach, size = self.pattern.search, self.width, self.reach, len(text)
        for at, length in places:
            found = search(text, max(0, at + length - width), min(size, at + reach))
            if found is not None and found.start() <= at:
                return True
        return False


def _lookahead_width(parsed) -> int | None:
    """An upper bound on how far past a match the pattern's lookaheads read (None: no bound, or unsure)."""
    total = 0
    stack = [parsed]
    while stack:
        for op, av in stack.pop():
            if op in (_c.ASSERT, _c.ASSERT_NOT):
                direction, sub = av
                if direction > 0:
                    ahead = sub.getwidth()[1]
                    if ahead >= _c.MAXREPEAT:
                        return None
                    total += ahead
                stack.append(sub)
            elif op is _c.SUBPATTERN:
                stack.append(av[3])
            elif op is _c.BRANCH:
                stack.extend(av[1])
            elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
                stack.append(av[2])
            elif op is _c.ATOMIC_GROUP:
                stack.append(av)
            elif op in (_c.GROUPREF_EXISTS, _c.GROUPREF, _c.GROUPREF_IGNORE):
                return None
    return total


# Each node is summarised as (exact, pieces): ``exact`` is the finite set of
# strings it can match (None when unknown or too many), ``pieces`` a list of
# sets such that every match contains one string of each set (empty when
# nothing is known).


def _sequence(items, start: set[str] | None = None) -> tuple[set[str] | None, list[set[str]]]:
    """(exact, pieces) for parsed items matched one after another (after one of ``start``)."""
    current = set(start) if start else {""}  # exact strings matched since the last break
    exact_all = True
    pieces: list[set[str]] = []
    for op, av in items:
        if op is _c.BRANCH and len(current) == 1 and current != {""}:
            # re's parser moves what all alternatives begin with (often a \b)
            # out in front of them; put it back, so that each alternative's
            # phrases keep it. (Only a single string: more would multiply.)
            exact, needed = _branch(av, current)
            if exact is not None:
                current = exact
                continue
            exact_all = False
            pieces.append(current)
            pieces.extend(needed)
            current = {""}
            continue
        exact, needed = _node(op, av)
        if exact is not None and len(current) * len(exact) <= _MAX_EXACT:
            current = {a + b for a in current for b in exact}
            continue
        # The run of exact items stops here: what it matched is one necessary
        # piece of every match; this item's own requirements are others.
        exact_all = False
        pieces.append(current)
        if exact is not None:
            current = set(exact)
        else:
            pieces.extend(needed)
            current = {""}
    if exact_all:
        return current, [current]
    pieces.append(current)
    return None, [piece for piece in pieces if _useful(piece)]


def _branch(alternatives, prefix: set[str] | None = None) -> tuple[set[str] | None, list[set[str]]]:
    """(exact, pieces) for one of ``alternatives`` (after one of ``prefix``).

    Unless the alternatives are exact strings, one piece: the strongest piece
    of each alternative, together (every match matches one alternative).
    """
    results = [_sequence(alt, prefix) for alt in alternatives[1]]
    if all(exact is not None for exact, _ in results):
        union = set().union(*(exact for exact, _ in results))
        if len(union) <= _MAX_EXACT:
            return union, [union]
    required: set[str] = set()
    for _exact, pieces in results:
        best = max(pieces, key=_strength, default=set())
        if _strength(best)[0] == 0:
            return None, []
        required |= best
    return None, [required]


def _useful(phrases: set[str]) -> bool:
    """Whether a piece says anything: it has phrases, and none of them is empty (``_strength(...)[0]``)."""
    return bool(phrases) and all(p.replace(_BOUNDARY, "") for p in phrases)


def _strength(phrases: set[str]) -> tuple[int, int, int, int]:
    """How good a piece is to index a pattern by; (0, ...) when it is no use at all.

    Best: every phrase has an uncommon whole word to be filed under (looking
    phrases up costs nothing until their word turns up), then the shortest
    phrase is long, then there are few phrases.
    """
    if not _useful(phrases):
        return (0, 0, 0, 0)
    word = min(
        max((len(w) for w in _whole_words(p) if w not in COMMON_WORDS), default=0) for p in phrases
    )
    return (1, min(word, 6), min(len(p.replace(_BOUNDARY, "")) for p in phrases), -len(phrases))


def _node(op, av) -> tuple[set[str] | None, list[set[str]]]:
    if op is _c.LITERAL:
        return {chr(av)}, [{chr(av)}]
    if op is _c.IN:
        chars: set[str] = set()
        for item_op, item_av in av:
            if item_op is _c.LITERAL:
                chars.add(chr(item_av))
            elif item_op is _c.RANGE and item_av[1] - item_av[0] < 16:
                chars.update(chr(c) for c in range(item_av[0], item_av[1] + 1))
            else:  # NEGATE, CATEGORY, wide ranges: could be anything
                return None, []
        return chars, [chars]
    if op is _c.AT:
        # Zero-width. \b is kept as a marker: it tells whole words apart.
        return ({_BOUNDARY} if av is _c.AT_BOUNDARY else {""}), []
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        # Zero-width; dropping a lookaround's own requirement only weakens the keys.
        return {""}, []
    if op is _c.SUBPATTERN:
        _group, add_flags, _del_flags, sub = av
        if add_flags & (re.IGNORECASE | re.ASCII | re.LOCALE):
            return None, []
        return _sequence(sub)
    if op is _c.ATOMIC_GROUP:
        return _sequence(av)
    if op is _c.BRANCH:
        return _branch(av)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        low, high, sub = av
        exact, pieces = _sequence(sub)
        if low == 0:
            if high == 1 and exact is not None:
                return {""} | exact, []
            return None, []
        if exact is not None and low == high and len(exact) ** low <= _MAX_EXACT:
            repeated = {""}
            for _ in range(low):
                repeated = {a + b for a in repeated for b in exact}
            return repeated, [repeated]
        return None, pieces  # at least one repetition: each of its pieces is needed
    # ANY, NOT_LITERAL, GROUPREF, GROUPREF_EXISTS, ...: could be anything.
    return None, []
