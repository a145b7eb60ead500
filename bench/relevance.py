"""How well do letters find the topics a columnist would link? (a benchmark, not a test)

Imports examples/topics.toml into a temporary database and runs every letter
of the development sets (bench/data/relevance_letters.toml, and
bench/data/relevance_dev2.toml when present) through topics.topics_for_letter;
prints recall@3, hit@3 and MRR side by side, both for what is linked and with
every candidate kept, then the development letters that did worst.

The first development set is split by position: "tune" (two of every three)
and "holdout" (every third). dev2 is split by a hash of each letter's id:
about 40% is "dev2 held-out", printed only with --heldout, for a final figure
on letters nobody tuned on. The blind set (bench/data/relevance_blind.toml)
is scored only with --blind, and its letters are never printed: that set is
for measuring only, never for tuning.

The neighbours' vote is measured on letters it did not learn from: the tune
letters are added to the catalog as labelled examples and the holdout letters
matched; then all development letters but dev2's held-out part are labelled
and dev2's held-out part (and, with --blind, the blind set) matched.

    .venv/bin/python bench/relevance.py [--quick] [--split all|tune|holdout|dev2-tune]
                                        [--worst N] [--heldout] [--blind]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import datetime as dt
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailer import topics  # noqa: E402
from mailer.store.db import open_database  # noqa: E402

LETTERS = REPO / "bench" / "data" / "relevance_letters.toml"
DEV2 = REPO / "bench" / "data" / "relevance_dev2.toml"
BLIND = REPO / "bench" / "data" / "relevance_blind.toml"
CATALOG = REPO / "examples" / "topics.toml"
K = 3

#: Mail that is not about anything the column covers; written for this bench
#: (not part of the labelled set). Each should fall back to the starters.
OFF_TOPIC = [
    ("Where is my parcel?", "My parcel was not delivered, refund please. Order 55121."),
    ("Invoice 2291 overdue", "Please find attached invoice 2291 for printing services, "
     "payable within 30 days. Bank details are on the invoice."),
    ("Guest post opportunity", "Hi, I run a popular SEO blog and would love to write a guest "
     "post for your website. We can include a backlink to our partner casino site."),
    ("Your account", "Your mailbox storage is full. Click here to verify your password "
     "or your account will be suspended within 24 hours."),
    ("Parking at the venue", "Is there parking near the conference centre on Saturday, "
     "and does the ticket include lunch?"),
    ("Broken link", "Hello, the link to the archive on your homepage gives a 404 error "
     "in Firefox. Thought you would want to know."),
    ("Press release: new app launch", "FOR IMMEDIATE RELEASE. Acme Corp today announced "
     "the launch of its cloud accounting platform for small businesses, available in 40 countries."),
    ("Meeting on Thursday", "Can we move our call about the newspaper contract to Thursday at "
     "3pm? I will send the updated draft of the agreement before then."),
    ("Typo in Monday's piece", "Small thing: the second paragraph says 'there' where it "
     "should say 'their'. Otherwise fine."),
    ("Car for sale", "Selling my 2015 hatchback, 60,000 miles, new tyres, full service "
     "history. Reply if interested, cash only."),
]


def split_of(index: int) -> str:
    """Which half a development letter belongs to, by its position in the file."""
    return "holdout" if index % 3 == 2 else "tune"


def dev2_split_of(letter_id: str) -> str:
    """Which part of the second development set a letter is in, by a hash of its id.

    About 40% are "dev2 held-out": never looked at while tuning, scored only.
    """
    digest = hashlib.sha256(letter_id.encode("utf-8")).digest()
    return "dev2-heldout" if digest[0] % 10 < 4 else "dev2-tune"


def read_letters(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return tomllib.loads(path.read_text(encoding="utf-8"))["letter"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Print only the summary table.")
    parser.add_argument("--split", choices=("all", "tune", "holdout", "dev2-tune"), default="all",
                        help="Whose worst letters to list (never dev2 held-out or blind ones).")
    parser.add_argument("--worst", type=int, default=8,
                        help="How many worst development letters to list (never blind ones).")
    parser.add_argument("--heldout", action="store_true",
                        help="Also print dev2's held-out part (kept out of tuning; print it at the end).")
    parser.add_argument("--blind", action="store_true",
                        help="Also score the blind set (only for a final figure; never tune on it).")
    args = parser.parse_args()

    development = read_letters(LETTERS)
    dev2 = read_letters(DEV2)
    blind = read_letters(BLIND) if args.blind else []
    catalog, problems = topics.load_catalog(CATALOG)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    known = {t.slug for t in catalog}
    for name, letters in (("development", development), ("dev2", dev2), ("blind", blind)):
        for letter in letters:
            missing = set(letter["relevant"]) - known
            if missing:
                print(f"{name} letter {letter['id']}: unknown slugs {sorted(missing)}", file=sys.stderr)
                return 1

    with tempfile.TemporaryDirectory() as tmp:
        db = fresh_database(Path(tmp) / "bench.db", catalog)
        topics.topics_for_letter(db, "warm-up", "Load the data files and the vocabulary first.")
        started = time.perf_counter()
        dev_results = [run_letter(db, index, letter) for index, letter in enumerate(development)]
        elapsed = time.perf_counter() - started
        dev2_results = [run_letter(db, index, letter, split=dev2_split_of(letter["id"]))
                        for index, letter in enumerate(dev2)]
        blind_results = [run_letter(db, index, letter, split="blind")
                         for index, letter in enumerate(blind)]
        off_topic = [topics.topics_for_letter(db, s, b, limit=K)[1] for s, b in OFF_TOPIC]
        db.close()

        # The neighbours' vote over the desk's labelled letters, measured on
        # letters it did not learn from: the tune letters are labelled and
        # the holdout letters are matched; then all development letters
        # (both sets but dev2's held-out part) are labelled and dev2's
        # held-out part and the blind letters are matched.
        tune = [letter for index, letter in enumerate(development) if split_of(index) == "tune"]
        db = fresh_database(Path(tmp) / "labelled-tune.db", with_examples(catalog, tune))
        holdout_labelled = [run_letter(db, index, letter) for index, letter in enumerate(development)
                            if split_of(index) == "holdout"]
        db.close()
        labelled = development + [x for x in dev2 if dev2_split_of(x["id"]) == "dev2-tune"]
        db = fresh_database(Path(tmp) / "labelled-all.db", with_examples(catalog, labelled))
        heldout_labelled = [run_letter(db, index, letter, split="dev2-heldout")
                            for index, letter in enumerate(dev2)
                            if dev2_split_of(letter["id"]) == "dev2-heldout"]
        blind_labelled = [run_letter(db, index, letter, split="blind")
                          for index, letter in enumerate(blind)]
        db.close()

    print(f"mailer relevance bench, {dt.date.today().isoformat()}: "
          f"{len(catalog)} topics, k={K}, {1000 * elapsed / max(1, len(development)):.2f} ms per letter")
    print()
    print("linked = what the acknowledgement links (starters fill in); "
          "ranked = every candidate kept, no floor")
    print(f"{'set':<34} {'letters':>7}   {'linked: recall@3':>16} {'hit@3':>6} {'MRR':>6}"
          f"   {'ranked: recall@3':>16} {'hit@3':>6} {'MRR':>6} {'fell back':>10}")
    groups = [("development", dev_results),
              ("  tune", [r for r in dev_results if r["split"] == "tune"]),
              ("  holdout", [r for r in dev_results if r["split"] == "holdout"]),
              ("  dev2 tune", [r for r in dev2_results if r["split"] == "dev2-tune"]),
              ("holdout, tune letters labelled", holdout_labelled)]
    if args.heldout:
        groups += [("dev2", dev2_results),
                   ("  dev2 held-out", [r for r in dev2_results if r["split"] == "dev2-heldout"]),
                   ("dev2 held-out, dev labelled", heldout_labelled)]
    if args.blind:
        groups += [("blind", blind_results), ("blind, dev labelled", blind_labelled)]
    for name, rows in groups:
        if not rows:
            continue
        print(f"{name:<34} {len(rows):>7}   {mean(rows, 'recall'):>16.3f} {mean(rows, 'hit'):>6.3f} "
              f"{mean(rows, 'rr'):>6.3f}   {mean(rows, 'all_recall'):>16.3f} "
              f"{mean(rows, 'all_hit'):>6.3f} {mean(rows, 'all_rr'):>6.3f} "
              f"{sum(r['fell_back'] for r in rows):>10}")
    print(f"off-topic mail that fell back to the starters: {sum(off_topic)} of {len(OFF_TOPIC)}")

    if not args.quick and args.worst:
        chosen = [r for r in dev_results + dev2_results
                  if r["split"] in (("tune", "holdout") if args.split == "all" else (args.split,))]
        worst = sorted(chosen, key=lambda r: (r["recall"], r["rr"]))[: args.worst]
        worst = [r for r in worst if r["recall"] < 1.0]
        print()
        print(f"worst development letters ({args.split}):" if worst
              else f"no misses ({args.split})")
        for r in worst:
            print(f"  {r['id']} [{r['split']}] recall {r['recall']:.2f}"
                  + ("  (fell back)" if r["fell_back"] else ""))
            print(f"    wanted: {', '.join(r['relevant'])}")
            print(f"    got:    {', '.join(f'{s} ({v:.2f})' for s, v in r['found'])}")
    return 0


def fresh_database(path: Path, catalog: list) -> object:
    """A new archive holding ``catalog``."""
    db = open_database(path)
    clock = lambda: dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)  # noqa: E731
    topics.import_topics(db, catalog, clock=clock)
    return db


def with_examples(catalog: list, letters: list[dict]) -> list:
    """The catalog with ``letters`` added as labelled example letters of their relevant topics."""
    extra: dict[str, list[str]] = {}
    for letter in letters:
        for slug in letter["relevant"]:
            extra.setdefault(slug, []).append(f"{letter['subject']}\n{letter['body']}")
    return [dataclasses.replace(t, examples=t.examples + tuple(extra.get(t.slug, ()))) for t in catalog]


def run_letter(db, index: int, letter: dict, split: str | None = None) -> dict:
    """Match one letter both ways (linked and every candidate kept) and score both."""
    found, fell_back = topics.topics_for_letter(db, letter["subject"], letter["body"], limit=K)
    ranked = topics.match_topics(db, letter["subject"], letter["body"], limit=K, min_score=0)
    result = score(letter["relevant"], [m.slug for m in found])
    result.update({f"all_{key}": value
                   for key, value in score(letter["relevant"], [m.slug for m in ranked]).items()})
    result.update({
        "id": letter["id"],
        "split": split or split_of(index),
        "relevant": letter["relevant"],
        "found": [(m.slug, m.score) for m in found[:K]],
        "fell_back": fell_back,
    })
    return result


def score(relevant: list[str], slugs: list[str]) -> dict:
    """recall@k, hit@k and reciprocal rank of one letter's top k."""
    slugs = slugs[:K]
    hits = [s for s in slugs if s in relevant]
    first = next((rank for rank, s in enumerate(slugs, start=1) if s in relevant), None)
    return {
        "recall": len(hits) / min(len(relevant), K),
        "hit": 1.0 if hits else 0.0,
        "rr": 1.0 / first if first else 0.0,
    }


def mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows) if rows else 0.0


if __name__ == "__main__":
    sys.exit(main())
