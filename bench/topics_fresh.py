"""What does matching cost for a letter never seen before? (a benchmark, not a test)

The pipeline matches every letter once, so what counts is the first pass over
new letters, not the best of several passes over the same ones. This imports
examples/topics.toml (as bench/ingest.py's ``import_topics`` does), then runs
``topics.topics_for_letter`` once over each of N new letters of the ingest
bench (``make_letters``, a new seed every round) and once over every
development letter (bench/data/relevance_letters.toml and relevance_dev2.toml),
and prints the CPU time (``time.process_time``) per letter.

With ``--reference`` the matcher as it was before it was made faster
(tests/topics_reference.py, which gives the same topics) runs the same
letters in the same process, the two taking turns at going first, so the
two figures share the machine's load.

    .venv/bin/python bench/topics_fresh.py [--letters N] [--rounds N] [--reference]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ingest import make_letters  # noqa: E402
from mailer import topics  # noqa: E402
from mailer.store.db import open_database  # noqa: E402
from mailer.store.parsing import parse_message  # noqa: E402
from mailer.topics import themes  # noqa: E402

DEVELOPMENT = [REPO / "bench" / "data" / "relevance_letters.toml", REPO / "bench" / "data" / "relevance_dev2.toml"]


def development_letters() -> list[tuple[str, str]]:
    """(subject, body) of every development letter."""
    letters = []
    for path in DEVELOPMENT:
        for letter in tomllib.loads(path.read_text(encoding="utf-8"))["letter"]:
            letters.append((letter["subject"], letter["body"]))
    return letters


def bench_letters(n: int, seed: int) -> list[tuple[str, str]]:
    """(subject, body) of ``n`` new letters of the ingest bench, as the pipeline parses them."""
    parsed = [parse_message(raw) for _, raw in make_letters(n, seed=seed)]
    return [(p.subject, p.body_text) for p in parsed]


def per_letter_ms(match, db, letters) -> float:
    """CPU milliseconds per letter for one pass of ``match`` over ``letters``."""
    started = time.process_time()
    for subject, body in letters:
        match(db, subject, body, limit=3)
    return (time.process_time() - started) / len(letters) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--letters", type=int, default=300, help="new bench letters per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reference", action="store_true",
                        help="also run the matcher as it was (tests/topics_reference.py)")
    args = parser.parse_args()

    matchers = {"now": topics.topics_for_letter}
    if args.reference:
        sys.path.insert(0, str(REPO / "tests"))
        import topics_reference

        matchers["before"] = topics_reference.topics_for_letter
    themes.warm_up()
    development = development_letters()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(Path(tmp) / "bench.db")
        found, problems = topics.load_catalog(REPO / "examples" / "topics.toml")
        if problems:
            raise SystemExit("examples/topics.toml: " + "; ".join(problems))
        topics.import_topics(db, found, clock=lambda: dt.datetime.now(dt.timezone.utc))
        for match in matchers.values():  # read the catalog and the data files first
            match(db, "warm-up", "Load the data files and the catalog first.")
        bench = {name: [] for name in matchers}
        real = {name: [] for name in matchers}
        for round_ in range(args.rounds):
            letters = bench_letters(args.letters, seed=1000 + round_)
            order = list(matchers.items())
            if round_ % 2:
                order.reverse()
            for name, match in order:
                bench[name].append(per_letter_ms(match, db, letters))
                real[name].append(per_letter_ms(match, db, development))
        db.close()
    print(f"topics_for_letter, CPU ms per new letter, {dt.date.today().isoformat()}: "
          f"{len(found)} topics, {args.rounds} rounds")
    for name in matchers:
        print(f"{name:7} bench letters ({args.letters} a round): median {statistics.median(bench[name]):.2f} "
              f"(min {min(bench[name]):.2f})   development letters ({len(development)}, first round "
              f"{real[name][0]:.2f}): median {statistics.median(real[name]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
