"""Measure mailer.crisis on the labelled set in tests/data/crisis_cases.toml.

Run from the repository root:

    python bench/crisis.py

Prints cases, recall, false alarms and precision (overall and per batch),
then lists every miss and false alarm with the patterns that fired. The
figures come from our own small, self-written set; see docs/crisis.md.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.rules.crisis import _explain, assess  # noqa: E402

CASES = ROOT / "tests" / "data" / "crisis_cases.toml"


def load_cases(path: Path = CASES) -> list[dict]:
    """Return the labelled cases as dicts (id, text, crisis, category, ...)."""
    with path.open("rb") as fh:
        return tomllib.load(fh)["case"]


def score(cases: list[dict]) -> dict:
    """Score ``cases`` and return counts plus the lists of errors."""
    misses, false_alarms, wrong_category = [], [], []
    for case in cases:
        result = assess(case.get("subject", ""), case["text"])
        if case["crisis"] and not result.urgent:
            misses.append(case)
        elif not case["crisis"] and result.urgent:
            false_alarms.append(case)
        elif case["crisis"] and case["category"] not in result.signals:
            wrong_category.append((case, result.signals))
    crisis = sum(c["crisis"] for c in cases)
    return {
        "cases": len(cases),
        "crisis": crisis,
        "calm": len(cases) - crisis,
        "hits": crisis - len(misses),
        "misses": misses,
        "false_alarms": false_alarms,
        "wrong_category": wrong_category,
    }


def _ratio(num: int, den: int) -> str:
    return f"{num}/{den} = {num / den:.3f}" if den else "n/a"


def main() -> int:
    """Print the summary table, a per-batch table and the errors; return 0."""
    cases = load_cases()
    s = score(cases)
    flagged = s["hits"] + len(s["false_alarms"])
    expected = sum(bool(c.get("expect_false_alarm")) for c in s["false_alarms"])
    rows = [
        ("cases", f"{s['cases']}"),
        ("crisis cases", f"{s['crisis']}"),
        ("non-crisis cases", f"{s['calm']}"),
        ("recall", _ratio(s["hits"], s["crisis"])),
        ("false alarms", _ratio(len(s["false_alarms"]), s["calm"])),
        ("  of which by design", f"{expected}"),
        ("precision", _ratio(s["hits"], flagged)),
        ("caught, other category", f"{len(s['wrong_category'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")

    print("\nper batch (batch: recall, false alarms)")
    for batch in sorted({c.get("batch", "initial") for c in cases}):
        b = score([c for c in cases if c.get("batch", "initial") == batch])
        print(f"  {batch:<10} recall {_ratio(b['hits'], b['crisis'])}, "
              f"false alarms {_ratio(len(b['false_alarms']), b['calm'])}")

    def show(case: dict) -> str:
        fired = _explain(case.get("subject", ""), case["text"])
        names = ", ".join(f"{cat}:{name}" for cat, name in fired) or "nothing"
        tag = " (by design)" if case.get("expect_false_alarm") else ""
        return f"  {case['id']}{tag}: {case['text']!r}\n      fired: {names}"

    print(f"\nmisses ({len(s['misses'])}):")
    for case in s["misses"]:
        print(show(case))
    print(f"\nfalse alarms ({len(s['false_alarms'])}):")
    for case in s["false_alarms"]:
        print(show(case))
    if s["wrong_category"]:
        print(f"\ncrisis caught under another category ({len(s['wrong_category'])}):")
        for case, signals in s["wrong_category"]:
            print(f"  {case['id']}: labelled {case['category']}, signals {signals}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
