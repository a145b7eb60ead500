"""Themes: what a letter is about, in the words readers use for it.

A theme (worry, grief, a partner, money, ...) is a file in
``mailer/data/themes/``: an id, a label, the public pages its vocabulary was
written from, and hundreds of lowercase phrases readers use for it (bodily
signs, situations, events, other people's words, feelings). A letter's text is
scanned for those phrases, on stems, word for word, and each theme gets the
evidence of the phrases found. Topics get a theme profile the same way from
their own text, or from the ``themes`` the columnist sets in the catalog;
matching (``matching.py``) compares the two.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections import Counter
from dataclasses import dataclass
from importlib import resources

from mailer.topics.stemmer import STOP_WORDS, WORD, _stem

#: A phrase of n words counts this much more, per extra word, than one word:
#: "can't switch off my mind" says more than "mind".
PHRASE_LENGTH_BONUS = 1.0
#: A *mention* (a theme file's ``mentions``: "my husband", "kids", "money")
#: says who or what is in a letter more than what it is about; it counts
#: this much of a one-word phrase.
MENTION_WEIGHT = 0.25
#: A content word of a theme's phrases, found alone in a letter, counts this
#: much times the share of the theme's phrases among all phrases that hold
#: it ("passed" from "since she passed"); 0 turns words-of-phrases off.
WORD_WEIGHT = 0.6
#: ... but only when at least this share of those phrases is one theme's.
WORD_MIN_SHARE = 0.6
#: A theme whose evidence in a topic's text is below this share of the
#: topic's strongest theme is not part of its profile.
PROFILE_CUTOFF = 0.35
#: Where a topic's words come from, and how much each field counts.
TOPIC_FIELD_WEIGHTS = {"title": 3.0, "keywords": 3.0, "summary": 1.5, "body": 0.5}


@dataclass(frozen=True)
class Theme:
    """One theme: its id, a label for people, and how many phrases it holds."""

    id: str
    label: str
    phrases: tuple[str, ...]
    sources: tuple[str, ...]
    mentions: tuple[str, ...] = ()
    #: A narrower theme names the broad one it refines ("therapist-fit" is
    #: part of "therapy"): it holds the words that tell apart topics the
    #: broad theme lumps together, so it is shorter.
    parent: str | None = None


@functools.lru_cache(maxsize=1)
def load_themes() -> dict[str, Theme]:
    """Every theme in mailer/data/themes/, by id (read once)."""
    folder = resources.files("mailer").joinpath("data/themes")
    themes: dict[str, Theme] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        theme = parse_theme(data, entry.name)
        themes[theme.id] = theme
    for theme in themes.values():
        if theme.parent is not None and theme.parent not in themes:
            raise ValueError(f"themes/{theme.id}.toml: key 'parent': unknown theme {theme.parent!r}")
    return themes


def parse_theme(data: dict, name: str) -> Theme:
    """Validate one theme file's content; errors name the file and the key."""
    theme_id = data.get("id")
    if not isinstance(theme_id, str) or not theme_id.strip():
        raise ValueError(f"themes/{name}: key 'id': expected a name like 'worry'")
    if name.endswith(".toml") and name[:-5] != theme_id:
        raise ValueError(f"themes/{name}: key 'id': {theme_id!r} does not match the file name")
    phrases = data.get("phrases")
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        raise ValueError(f"themes/{name}: key 'phrases': expected a list of phrases")
    mentions = data.get("mentions", [])
    if not isinstance(mentions, list) or not all(isinstance(p, str) for p in mentions):
        raise ValueError(f"themes/{name}: key 'mentions': expected a list of words")
    sources = data.get("sources") or []
    parent = data.get("parent")
    if parent is not None and (not isinstance(parent, str) or not parent.strip()):
        raise ValueError(f"themes/{name}: key 'parent': expected the id of a broader theme")
    return Theme(theme_id, str(data.get("label") or theme_id),
                 tuple(dict.fromkeys(p.strip().lower() for p in phrases if p.strip())),
                 tuple(str(s) for s in sources),
                 tuple(dict.fromkeys(p.strip().lower() for p in mentions if p.strip())),
                 parent)


def theme_names() -> frozenset[str]:
    """The ids a catalog may name in a topic's ``themes``."""
    return frozenset(load_themes())


# A phrase is found by its first stem: {first stem: {length: {stems: ((theme, weight), ...)}}},
# so each position of a text costs one lookup per phrase length, not one per phrase.
PhraseIndex = dict[str, dict[int, dict[tuple[str, ...], tuple[tuple[str, float], ...]]]]


def warm_up() -> None:
    """Read the theme files and build their indexes now (~0.1 s), not on the first letter."""
    phrase_index()
    word_index()
    _compiled()


@functools.lru_cache(maxsize=1)
def phrase_index() -> PhraseIndex:
    """Every theme phrase and mention, stemmed, indexed by first stem and length, with weights.

    A phrase that several themes share counts for each, divided among them;
    a single stop word is never a phrase.
    """
    owners: dict[tuple[str, ...], dict[str, float]] = {}
    for theme in load_themes().values():
        for phrases, scale in ((theme.mentions, MENTION_WEIGHT), (theme.phrases, 1.0)):
            for phrase in phrases:
                words = WORD.findall(phrase)
                if not words or (len(words) == 1 and words[0] in STOP_WORDS):
                    continue
                stems = tuple(_stem(w) for w in words)
                weight = scale * (1.0 + PHRASE_LENGTH_BONUS * (len(stems) - 1))
                owners.setdefault(stems, {})[theme.id] = weight
    index: PhraseIndex = {}
    for stems, weights in owners.items():
        shared = tuple((theme_id, weights[theme_id] / len(weights)) for theme_id in sorted(weights))
        index.setdefault(stems[0], {}).setdefault(len(stems), {})[stems] = shared
    # Longest first, so that the longest phrase at a position wins.
    return {first: dict(sorted(by_length.items(), reverse=True)) for first, by_length in index.items()}


@functools.lru_cache(maxsize=1)
def word_index() -> dict[str, tuple[str, float]]:
    """{content stem: (theme, share)} for words that mostly belong to one theme's phrases."""
    counts: dict[str, dict[str, int]] = {}
    for theme in load_themes().values():
        for phrase in theme.phrases:
            for stem in {_stem(w) for w in WORD.findall(phrase)}:
                if len(stem) > 2 and stem not in STOP_WORDS and not stem.isdigit():
                    counts.setdefault(stem, {}).setdefault(theme.id, 0)
                    counts[stem][theme.id] += 1
    index = {}
    for stem, by_theme in counts.items():
        theme_id, n = max(by_theme.items(), key=lambda kv: (kv[1], kv[0]))
        share = n / sum(by_theme.values())
        if share >= WORD_MIN_SHARE:
            index[stem] = (theme_id, share)
    return index


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[dict, dict]:
    """phrase_index() as theme_evidence reads it: phrases of several words by their first two
    stems ({(first, second): ((length, {stems: owners}), ...)}, longest first), and one-word
    phrases by their stem ({stem: owners})."""
    longer: dict[tuple[str, str], dict[int, dict]] = {}
    single: dict[str, tuple] = {}
    for first, by_length in phrase_index().items():
        for length, phrases in by_length.items():  # longest first
            if length == 1:
                single[first] = phrases[(first,)]
                continue
            for stems, owners in phrases.items():
                longer.setdefault(stems[:2], {}).setdefault(length, {})[stems] = owners
    return {pair: tuple(by_length.items()) for pair, by_length in longer.items()}, single


def theme_evidence(stems: list[str]) -> dict[str, float]:
    """How much a text, as a list of stems, speaks of each theme.

    Each phrase found adds its weight; the same phrase found n times adds
    1 + ln n times its weight, so a letter that says "tired" five times is
    not five times as much about sleep. Phrases of one theme do not overlap:
    the longest phrase starting first wins.
    """
    longer, single = _compiled()
    # Phrases of several words, found by a scan from the start. A one-word
    # phrase ends where it starts, so it never hides a later phrase: which
    # longer phrases are found does not depend on the one-word ones.
    # {(phrase, theme): [position first found, times, weight, its place among the phrase's themes]}
    counts: dict[tuple[tuple[str, ...], str], list] = {}
    # (stem, theme) -> positions where a longer phrase of the theme covers a one-word phrase of it
    hidden: dict[tuple[str, str], list[int]] = {}
    pairs = list(zip(stems, stems[1:]))
    covered: dict[str, int] = {}  # theme -> first position after its last phrase found
    for position in [i for i, pair in enumerate(pairs) if pair in longer]:
        for length, phrases in longer[pairs[position]]:  # longest first
            key = tuple(stems[position:position + length])
            for place, (theme_id, weight) in enumerate(phrases.get(key, ())):
                if covered.get(theme_id, 0) <= position:
                    covered[theme_id] = position + length
                    entry = counts.setdefault((key, theme_id), [position, 0, weight, place])
                    entry[1] += 1
                    for inside in range(position, position + length):
                        if any(owner == theme_id for owner, _ in single.get(stems[inside], ())):
                            hidden.setdefault((stems[inside], theme_id), []).append(inside)
    found_longer = bool(counts)
    tally = Counter(stems)
    # Where each stem is first used: needed only to put one-word phrases among longer ones.
    first = dict(zip(reversed(stems), range(len(stems) - 1, -1, -1))) if found_longer else {}
    for stem in [stem for stem in tally if stem in single]:  # in order of first use
        for place, (theme_id, weight) in enumerate(single[stem]):
            skipped = hidden.get((stem, theme_id), ())
            if tally[stem] > len(skipped):
                where = -1
                if found_longer:
                    where = first[stem]
                    while where in skipped:
                        where = stems.index(stem, where + 1)
                counts[((stem,), theme_id)] = [where, tally[stem] - len(skipped), weight, place]
    entries = counts.items()
    if found_longer:
        # The order a scan from the start finds them in (at one place, the
        # longer phrase first), so that the sums are the same to the last bit.
        entries = sorted(entries, key=lambda item: (item[1][0], -len(item[0][0]), item[1][3]))
    evidence: dict[str, float] = {}
    for (_, theme_id), (_, n, weight, _) in entries:
        evidence[theme_id] = evidence.get(theme_id, 0.0) + weight * (1.0 + math.log(n))
    if WORD_WEIGHT:
        for theme_id, share in filter(None, map(word_index().get, set(stems))):
            evidence[theme_id] = evidence.get(theme_id, 0.0) + WORD_WEIGHT * share
    return evidence


def topic_profile(fields: dict[str, list[str]], chosen: tuple[str, ...] = ()) -> dict[str, tuple[float, float]]:
    """A topic's themes: {theme: (share between 0 and 1, strength)}.

    ``chosen`` are the themes the columnist set in the catalog: they are the
    profile (each share 1.0, and the greatest strength, so a curated topic
    leads its themes), in the columnist's order. Otherwise the themes come
    from the topic's own stems per field (title, keywords, summary, body,
    weighted by TOPIC_FIELD_WEIGHTS): the strength is that weighted
    evidence, the share its ratio to the strongest theme's, and themes below
    PROFILE_CUTOFF of the strongest are left out.
    """
    if chosen:
        return {theme_id: (1.0, math.inf) for theme_id in chosen}
    total: dict[str, float] = {}
    for field, stems in fields.items():
        for theme_id, value in theme_evidence(stems).items():
            total[theme_id] = total.get(theme_id, 0.0) + TOPIC_FIELD_WEIGHTS.get(field, 1.0) * value
    if not total:
        return {}
    strongest = max(total.values())
    return {t: (round(v / strongest, 3), v) for t, v in sorted(total.items(), key=lambda kv: -kv[1])
            if v >= PROFILE_CUTOFF * strongest}
