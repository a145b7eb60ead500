"""Tests for mailer.crisis: named cases per category, idiom traps, the
labelled set in tests/data/crisis_cases.toml, and property tests."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.rules.crisis import CrisisAssessment, assess

CASES_PATH = Path(__file__).parent / "data" / "crisis_cases.toml"
KNOWN_SIGNALS = {"suicide", "self-harm", "danger-from-others"}
MAX_FALSE_ALARM_RATE = 0.15


def _load_cases() -> list[dict]:
    with CASES_PATH.open("rb") as fh:
        return tomllib.load(fh)["case"]


def urgent(text: str, subject: str = "") -> bool:
    return assess(subject, text).urgent


# --------------------------------------------------------------------- suicide


def test_direct_suicidal_statement_is_urgent():
    result = assess("", "I want to kill myself.")
    assert (result.urgent, result.signals) == (True, ("suicide",))
    assert "suicidal-thoughts" in result.signs


def test_passive_ideation_is_urgent():
    assert urgent("I wish I could go to sleep and not wake up.")


def test_better_off_without_me_is_urgent():
    assert "suicide" in assess("", "Everyone would be better off without me.").signals


def test_plan_with_pills_is_urgent():
    assert urgent("I've been saving up my tablets for a while now.")


def test_lowercase_typo_and_no_apostrophe_still_urgent():
    assert urgent("i dont want to live anymore")
    assert urgent("im so tired, i just wanna die")


def test_curly_apostrophe_and_zero_width_space_are_normalised():
    assert urgent("I don\u2019t want to be alive anymore")
    assert urgent("I have been feeling sui\u200bcidal")


def test_third_person_suicide_risk_is_urgent():
    assert "suicide" in assess("", "My son told me he wants to kill himself.").signals


def test_subject_line_alone_can_make_it_urgent():
    result = assess("I want to die", "Sorry, I don't know what else to say.")
    assert result.urgent and result.signals == ("suicide",)


# ------------------------------------------------------------------- self-harm


def test_cutting_again_is_self_harm():
    result = assess("", "I started cutting again last week.")
    assert result.urgent and "self-harm" in result.signals


def test_burning_myself_is_self_harm():
    assert "self-harm" in assess("", "When it gets bad I burn myself.").signals


def test_self_harm_word_with_any_hyphen_is_self_harm():
    for text in ("my self harm is back", "my self-harm is back", "my self\u2011harm is back", "selfharm again"):
        assert "self-harm" in assess("", text).signals, text


# ---------------------------------------------------------- danger from others


def test_partner_hitting_is_danger_from_others():
    result = assess("", "My husband hits me when he drinks.")
    assert result.urgent and result.signals == ("danger-from-others",)


def test_reported_death_threat_is_danger_from_others():
    assert "danger-from-others" in assess("", "my partner said he'd kill me if I left").signals


def test_fear_for_children_is_danger_from_others():
    assert "danger-from-others" in assess("", "I'm afraid he will hurt the kids.").signals


def test_not_safe_at_home_is_danger_from_others():
    assert "danger-from-others" in assess("", "I don't feel safe at home any more.").signals


def test_stalking_is_danger_from_others():
    assert "danger-from-others" in assess("", "My ex has been stalking me for months.").signals


def test_several_categories_are_reported_in_fixed_order():
    result = assess("", "He beats me and I've started cutting again. I want to die.")
    assert result.signals == ("suicide", "self-harm", "danger-from-others")


# ----------------------------------------------------------------------- traps


def test_deadline_idiom_is_not_a_crisis():
    assert not urgent("This deadline is killing me, how do I ask for more time?")


def test_dying_to_know_is_not_a_crisis():
    assert not urgent("I'm dying to know whether he still likes me.")


def test_sore_feet_idiom_is_not_a_crisis():
    assert not urgent("My feet are killing me after the wedding.")


def test_kill_for_a_coffee_is_not_a_crisis():
    assert not urgent("I could kill for a coffee right now.")


def test_suspense_is_killing_me_is_not_a_crisis():
    assert not urgent("The suspense is killing me!")


def test_shoot_me_a_reply_is_not_a_crisis():
    assert not urgent("Shoot me a reply when you can.")


def test_other_idioms_are_not_a_crisis():
    for text in (
        "The dessert was to die for.",
        "I kill time on my phone.",
        "That was a killer workout.",
        "I could murder a pizza.",
        "I'm dead tired.",
        "We were bored to death.",
        "I want to die of embarrassment when my dad dances.",
    ):
        assert not urgent(text), text


def test_killing_myself_at_work_is_not_a_crisis():
    assert not urgent("I've been killing myself at work to get promoted.")


def test_cut_myself_off_and_burnt_out_are_not_self_harm():
    assert not urgent("I cut myself off from my friends.")
    assert not urgent("I burnt myself out last year.")
    assert not urgent("I hurt myself at the gym.")


def test_it_hit_me_and_beat_me_at_chess_are_not_violence():
    assert not urgent("It hit me that I've wasted ten years.")
    assert not urgent("My son beat me at chess.")


def test_topic_mention_of_suicide_is_not_a_crisis():
    # Deliberate: discussing a show, or grief for a death years ago, is not
    # itself a crisis (see cases t22 and t23).
    assert not urgent("We watched a TV show about a teenager's suicide. Is it suitable for 14?")
    assert not urgent("My friend died by suicide eight years ago and I want to honour her memory.")


def test_negation_still_fires_by_design():
    # We do not parse negation; recall first. Documented in docs/crisis.md.
    assert urgent("I would never kill myself, but I am very low.")


def test_result_never_contains_letter_text():
    result = assess("private subject", "He hits me. My address is 12 Elm Street.")
    assert set(result.signals) <= KNOWN_SIGNALS


def test_empty_letter_is_not_urgent():
    assert assess("", "") == CrisisAssessment(urgent=False, signals=())


# --------------------------------------------------------------- labelled set


def test_labelled_set_is_big_enough_and_well_formed():
    cases = _load_cases()
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    crisis = [c for c in cases if c["crisis"]]
    calm = [c for c in cases if not c["crisis"]]
    assert len(cases) >= 80 and len(crisis) >= 35 and len(calm) >= 45
    for c in cases:
        assert c["category"] in KNOWN_SIGNALS | {"none"}, c["id"]
        assert (c["category"] == "none") == (not c["crisis"]), c["id"]
        assert c["text"].strip(), c["id"]


def test_labelled_set_recall_is_total_and_false_alarms_are_bounded():
    cases = _load_cases()
    crisis = [c for c in cases if c["crisis"]]
    calm = [c for c in cases if not c["crisis"]]

    def describe(c: dict) -> str:
        return f"{c['id']}: {c['text']!r}" + (f" -- {c['note']}" if c.get("note") else "")

    results = {c["id"]: assess(c.get("subject", ""), c["text"]) for c in cases}
    misses = [c for c in crisis if not results[c["id"]].urgent]
    wrong_category = [c for c in crisis if results[c["id"]].urgent and c["category"] not in results[c["id"]].signals]
    false_alarms = [c for c in calm if results[c["id"]].urgent]
    unexpected_false_alarms = [c for c in false_alarms if not c.get("expect_false_alarm")]
    rate = len(false_alarms) / len(calm)

    recall = (len(crisis) - len(misses)) / len(crisis)
    assert recall == 1.0, "missed crisis letters:\n" + "\n".join(map(describe, misses))
    assert not wrong_category, "crisis caught under the wrong category:\n" + "\n".join(map(describe, wrong_category))
    assert rate <= MAX_FALSE_ALARM_RATE, (
        f"false-alarm rate {rate:.3f} > {MAX_FALSE_ALARM_RATE}:\n" + "\n".join(map(describe, false_alarms))
    )
    # New false alarms should be a decision, not an accident: mark them
    # expect_false_alarm with a note, or fix the pattern.
    assert not unexpected_false_alarms, "unexpected false alarms:\n" + "\n".join(map(describe, unexpected_false_alarms))


@pytest.mark.parametrize("case", [c for c in _load_cases() if c.get("expect_false_alarm")], ids=lambda c: c["id"])
def test_by_design_false_alarms_still_fire(case):
    # If one of these stops firing the docs are out of date; drop the flag.
    assert urgent(case["text"], case.get("subject", ""))


# ----------------------------------------------------------- property tests


@settings(max_examples=300, deadline=None)
@given(subject=st.text(max_size=200), text=st.text(max_size=2000))
def test_assess_never_raises_and_reports_only_known_signals(subject, text):
    result = assess(subject, text)
    assert isinstance(result, CrisisAssessment)
    assert set(result.signals) <= KNOWN_SIGNALS
    assert len(result.signals) == len(set(result.signals))
    assert result.urgent == bool(result.signals)


@settings(max_examples=100, deadline=None)
@given(
    filler=st.lists(st.sampled_from(["the", "and", "dear", "I", "my", "today", "\n", "...", "\u2019", "work"]), max_size=60),
    position=st.integers(min_value=0, max_value=60),
)
def test_a_crisis_phrase_fires_wherever_it_sits_in_a_letter(filler, position):
    words = list(filler)
    words.insert(min(position, len(words)), " I want to kill myself. ")
    assert "suicide" in assess("", " ".join(words)).signals


def test_long_letter_is_assessed_quickly():
    import time

    letter = ("I had a long day at work and my husband forgot the shopping again. " * 2000) + "I want to die."
    start = time.perf_counter()
    assert urgent(letter)
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------ prefilter
#
# assess() searches only the patterns whose required phrases are in the letter
# (mailer/rules/crisis_index.py). That must never change an answer: every test below
# compares it with searching every pattern.

import re  # noqa: E402
import tomllib as _tomllib  # noqa: E402
import unicodedata  # noqa: E402

from hypothesis import HealthCheck  # noqa: E402

from mailer.rules import crisis  # noqa: E402
from mailer.rules.crisis_index import PatternIndex  # noqa: E402

RELEVANCE_LETTERS = Path(__file__).parent.parent / "bench" / "data" / "relevance_letters.toml"

_NAMED = [(f"{category}:{name}", rx) for category, group in (
    ("suicide", crisis.SUICIDE_PATTERNS), ("self-harm", crisis.SELF_HARM_PATTERNS),
    ("danger", crisis.DANGER_PATTERNS), ("guard", crisis.GUARDS),
) for name, rx in group]


def _letters() -> list[tuple[str, str, str]]:
    """(id, subject, text): the labelled cases and the 55 realistic letters of the topic bench."""
    letters = [(c["id"], c.get("subject", ""), c["text"]) for c in _load_cases()]
    with RELEVANCE_LETTERS.open("rb") as fh:
        letters += [(l["id"], l["subject"], l["body"]) for l in _tomllib.load(fh)["letter"]]
    return letters


def test_prefilter_changes_no_answer_on_the_labelled_and_realistic_letters():
    for letter_id, subject, text in _letters():
        assert crisis._prepare(subject, text) == crisis._prepare(subject, text, prefilter=False), letter_id
        assert crisis._explain(subject, text) == crisis._explain(subject, text, prefilter=False), letter_id


def test_every_crisis_letter_fires_some_pattern_through_the_prefilter():
    # The labelled crisis letters, one pattern at a time: the pattern that
    # fires on the full search is a candidate of the prefilter too.
    index, guards = crisis._index(), len(crisis.GUARDS)  # the guards come first in the index
    compiled = [pattern for _category, patterns in crisis._PATTERNS for _name, pattern in patterns]
    for case in _load_cases():
        prepared = crisis._prepare(case.get("subject", ""), case["text"])
        candidates = {number - guards for number in index.candidates(prepared) if number >= guards}
        fired = {number for number, pattern in enumerate(compiled) if pattern.search(prepared)}
        assert fired <= candidates, case["id"]


@pytest.mark.parametrize("rx", [rx for _name, rx in _NAMED], ids=[name for name, _rx in _NAMED])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_the_prefilter_never_skips_a_pattern_on_text_it_matches(rx, data):
    # Hypothesis writes texts that contain a match of the pattern, with any
    # characters around it (which is what tests the whole-word reasoning).
    pattern = re.compile(rx)
    # (The empty text is there so that a pattern hypothesis finds hard to
    # write matches for can never make the test "unsatisfiable".)
    text = data.draw(st.from_regex(pattern) | st.just(""))
    if pattern.search(text):
        assert 0 in PatternIndex([rx]).candidates(text)


_FRAGMENTS = st.one_of(
    *(st.from_regex(re.compile(rx)) for _name, rx in _NAMED[::3]),
    st.sampled_from(["my husband", "I", "myself", "kill", "the car", "self-care", "don\u2019t", "him",
                     "cut", "die", "hit me", "pills", "\u200b", "\u2014", "SELF", "\u00a0", ".", "\n"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=st.lists(_FRAGMENTS, max_size=3), body=st.lists(_FRAGMENTS, max_size=12))
def test_prefiltered_assess_equals_the_full_search_on_letters_built_from_pattern_pieces(subject, body):
    subject, body = " ".join(subject), " ".join(body)
    assert crisis._explain(subject, body) == crisis._explain(subject, body, prefilter=False)


def _normalise_as_before(text: str) -> str:
    # The normalisation before it became one str.translate pass.
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    text = text.translate(crisis._TRANSLATE).casefold()
    return re.sub(r"\s+", " ", text).strip()


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_normalisation_is_unchanged(text):
    assert crisis._normalise(text) == _normalise_as_before(text)


# -- the word model --------------------------------------------------------------------

def test_word_model_learns_words_of_crisis_letters_and_ignores_one_off_words():
    from mailer.rules.crisis_model import features_of, train

    letters = [("i cannot go on like this anymore", True), ("i cannot go on holiday this year", False),
               ("i cannot go on like this, everything is dark", True), ("the holiday was lovely", False),
               ("everything is dark and i cannot go on like this", True), ("lovely weather this year", False)]
    model = train([(features_of(text), label) for text, label in letters], min_count=2)
    assert model.weights["like"] > 0 > model.weights["year"]
    assert "holiday was" not in model.weights  # seen in one letter only
    assert model.probability(features_of("like this")) > model.probability(features_of("this year"))


def test_the_shipped_word_model_was_trained_on_development_letters_only():
    from mailer.rules.crisis_model import load_model

    model = load_model()
    assert model is not None and 0 < model.threshold <= 1
    assert "blind" not in model.trained_on and "held-out" not in model.trained_on


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([c["text"] for c in _load_cases()]), st.text(max_size=80))
def test_the_word_model_never_clears_what_the_rules_flag(text, extra):
    letter = f"{text} {extra}"
    if crisis.rules_urgent("", letter):
        assert crisis.assess("", letter).urgent
