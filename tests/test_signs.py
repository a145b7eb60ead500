"""The warning-sign vocabulary and how signs combine into a crisis.

The vocabulary is data (mailer/data/signs/*.toml); these tests pin how it
is read (whole words, apostrophes, numbers, exclusions) and the rule that
judges a letter by the signs it combines: "goodbye" alone is no crisis,
"goodbye" with "tonight" is; a means with a goodbye or an intent is; a wish
to die is, alone; a hedge never cancels a sign.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mailer.rules import crisis
from mailer.rules.signs import SIGNS_DIR, SignCategory, Vocabulary, load_vocabulary, read_category, tokens_of


def vocabulary(phrases=(), exclusions=(), id="test") -> Vocabulary:
    return Vocabulary([SignCategory(id=id, label=id, description="", phrases=tuple(phrases), exclusions=tuple(exclusions))])


def found(vocab: Vocabulary, text: str) -> dict:
    words = tokens_of(crisis._normalise(text))
    return {k: [" ".join(words[s:e]) for s, e in v] for k, v in vocab.matches(words).items()}


# -- reading the data -------------------------------------------------------------------

def test_every_sign_file_is_well_formed_and_named_for_its_id():
    paths = sorted(SIGNS_DIR.glob("*.toml"))
    assert len(paths) >= 12
    for path in paths:
        category = read_category(path)
        assert category.id == path.stem, path.name
        assert len(category.phrases) >= 50, f"{path.name}: a sign needs a broad vocabulary"
        with path.open("rb") as fh:
            assert tomllib.load(fh).get("sources"), f"{path.name}: say where the signs come from"


def test_every_category_the_rule_knows_has_a_file_and_every_file_a_place_in_the_rule():
    ids = {c.id for c in load_vocabulary().categories}
    assert crisis.ALONE <= ids and crisis.WEAK <= ids
    assert ids <= crisis.ALONE | crisis.WEAK | crisis.NEUTRAL


def test_a_broken_sign_file_names_the_file_and_key(tmp_path: Path):
    bad = tmp_path / "broken.toml"
    bad.write_text('id = "broken"\nlabel = "x"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.toml: 'phrases'"):
        read_category(bad)


# -- matching ---------------------------------------------------------------------------

def test_phrases_match_whole_words_only():
    vocab = vocabulary(["rope"])
    assert found(vocab, "I bought a rope.") == {"test": ["rope"]}
    assert found(vocab, "I read the ropes course leaflet") == {}


def test_apostrophes_and_hyphens_are_read_the_same_way_in_phrase_and_letter():
    vocab = vocabulary(["I can't go on", "self-harm"])
    assert found(vocab, "i cant go on")["test"] == ["i cant go on"]
    assert found(vocab, "I can\u2019t go on")["test"] == ["i cant go on"]
    assert found(vocab, "my self harm")["test"] == ["self harm"]


def test_a_number_placeholder_matches_digits_and_number_words():
    vocab = vocabulary(["{n} pills"])
    assert found(vocab, "I have 40 pills saved")["test"] == ["40 pill"]
    assert found(vocab, "about thirty pills")["test"] == ["thirty pill"]
    assert found(vocab, "my pills") == {}


def test_inflections_and_fillers_do_not_hide_a_phrase():
    vocab = vocabulary(["saved up my pills", "I want to die"])
    assert found(vocab, "I've been saving up my pills")["test"] == ["sav up my pill"]
    assert found(vocab, "I want to just die")["test"] == ["i want to just die"]
    assert found(vocab, "I want to go and die") == {}


def test_an_exclusion_hides_a_match_inside_it_and_only_in_its_own_category():
    vocab = Vocabulary([
        SignCategory("time", "time", "", ("tomorrow",), ("see you tomorrow",)),
        SignCategory("other", "other", "", ("tomorrow",), ()),
    ])
    assert found(vocab, "see you tomorrow") == {"other": ["tomorrow"]}
    assert found(vocab, "tomorrow, then") == {"time": ["tomorrow"], "other": ["tomorrow"]}


# -- combining signs -------------------------------------------------------------------------

@pytest.mark.parametrize("signs, urgent", [
    ({"finality"}, False),
    ({"time"}, False),
    ({"means"}, False),
    ({"finality", "time"}, True),
    ({"means", "finality"}, True),
    ({"means", "intent"}, True),
    ({"burden", "hopelessness"}, True),
    ({"time", "hopelessness"}, False),
    ({"resolve", "time"}, True),
    ({"wish-to-die"}, True),
    ({"suicidal-thoughts"}, True),
    ({"danger-from-others"}, True),
    ({"child-abuse"}, True),
], ids=lambda v: "+".join(sorted(v)) if isinstance(v, set) else str(v))
def test_signs_combine_into_a_crisis(signs, urgent):
    assert crisis.judge_signs(frozenset(signs)) is urgent


def test_goodbye_alone_is_not_a_crisis_but_with_tonight_it_is():
    assert not crisis.assess("", "Goodbye for now, and thank you for the column.").urgent
    assert crisis.assess("", "tonight is the night. goodbye and thank you for your columns").urgent


def test_a_means_with_a_farewell_is_a_crisis():
    letter = "I have the pills saved up. I just wanted someone to know before I do it."
    result = crisis.assess("", letter)
    assert result.urgent and "suicide" in result.signals
    # The saved-up pills are a means gathered: the preparation sign.
    assert {"finality", "preparation"} <= set(result.signs)


def test_a_hedge_does_not_cancel_a_sign():
    assert crisis.assess("", "I want to die lol, not that I'd do anything").urgent
    assert crisis.assess("", "I'm fine really. I just don't want to be here anymore.").urgent


def test_the_assessment_names_signs_but_never_holds_letter_text():
    result = crisis.assess("private", "He hits me. I have 40 pills in the drawer at 12 Elm Street.")
    ids = {c.id for c in load_vocabulary().categories}
    assert set(result.signs) <= ids


# -- near phrases and the window for weak signs -------------------------------------------

def test_a_near_phrase_matches_its_parts_in_either_order_within_a_few_words():
    vocab = vocabulary(["pills ... saved"])
    assert found(vocab, "I have been saving my pills for weeks")
    assert found(vocab, "the pills I have quietly saved up")
    assert not found(vocab, "I saved the receipts from the shop. Later, much later, after the long walk home, the pills")
    assert not found(vocab, "pills")


def test_an_exclusion_still_hides_a_near_phrase_inside_it():
    vocab = vocabulary(["pills ... saved"], exclusions=["saved me from the pills"])
    assert not found(vocab, "my sister saved me from the pills years ago")


def test_two_weak_signs_count_together_only_within_a_sentence_or_two():
    goodbye, tonight = "I wanted to say goodbye to you all.", "I am going to the cinema tonight."
    filler = " ".join(["We talked about the garden, the weather and the neighbours' new car."] * 8)
    # The rules alone: the word model may still weigh a lone goodbye.
    assert crisis.rules_urgent("", f"{goodbye} {tonight}")
    assert not crisis.rules_urgent("", f"{goodbye} {filler} {tonight}")
