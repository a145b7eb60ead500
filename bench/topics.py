"""How fast is matching a letter against a big catalog? (a benchmark, not a test)

Builds a catalog of 5,000 topics (1,000 with --quick): the 26 real ones of
examples/topics.toml plus generated ones of realistic lengths (a title of
4-11 words, a summary of 25-55 words, 4-9 keywords of 1-3 words, and a body
of 300-900 words that is stored but not indexed). Generated words are drawn,
with a Zipf-like skew, from the vocabulary of the example catalog and the
labelled letters (so a letter shares words with most topics: the slow case)
plus made-up words for the long tail. Then every labelled letter is matched,
over and over, and the latency of ``topics_for_letter`` is reported as
p50/p90/p99, with recall@3 of the real topics among the generated ones.

    .venv/bin/python bench/topics.py [--quick] [--topics N] [--rounds N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import statistics
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
CATALOG = REPO / "examples" / "topics.toml"


def vocabulary(rng: random.Random) -> list[str]:
    """Real words from the examples, most frequent first, then a tail of made-up ones."""
    text = CATALOG.read_text(encoding="utf-8") + LETTERS.read_text(encoding="utf-8")
    counts: dict[str, int] = {}
    for word in re.findall(r"[a-z]{3,}", text.lower()):
        counts[word] = counts.get(word, 0) + 1
    real = sorted(counts, key=lambda w: -counts[w])
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "den", "mar", "tel", "pro", "sen"]
    made_up = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(6000)}
    return real + sorted(made_up - set(real))


def generate(n: int, seed: int = 7) -> list[topics.Topic]:
    """``n`` made-up topics with realistic field lengths (none of them starters)."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    weights = [1.0 / (rank + 10) for rank in range(len(vocab))]

    def words(low: int, high: int) -> str:
        return " ".join(rng.choices(vocab, weights, k=rng.randint(low, high)))

    start = dt.date(2015, 1, 5)
    made = []
    for i in range(n):
        made.append(topics.Topic(
            slug=f"generated-topic-{i:05d}",
            title=words(4, 11).capitalize(),
            url=f"https://column.example/topics/generated-topic-{i:05d}",
            summary=words(25, 55).capitalize() + ".",
            keywords=tuple(dict.fromkeys(words(1, 3) for _ in range(rng.randint(4, 9)))),
            published=(start + dt.timedelta(days=i % 4000)).isoformat(),
            body=words(300, 900),
        ))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 topics and fewer rounds.")
    parser.add_argument("--topics", type=int, default=None, help="How many topics to generate.")
    parser.add_argument("--rounds", type=int, default=None, help="Passes over the development letters.")
    args = parser.parse_args()
    n = args.topics or (1000 if args.quick else 5000)
    rounds = args.rounds or (5 if args.quick else 20)

    letters = tomllib.loads(LETTERS.read_text(encoding="utf-8"))["letter"]
    clock = lambda: dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(Path(tmp) / "bench.db")
        real, _ = topics.load_catalog(CATALOG)
        made = real + generate(n - len(real))
        started = time.perf_counter()
        counts = topics.import_topics(db, made, clock=clock)
        import_seconds = time.perf_counter() - started

        started = time.perf_counter()
        again = topics.import_topics(db, made, clock=clock)
        reimport_seconds = time.perf_counter() - started

        for letter in letters:  # warm the page cache and the synonyms file
            topics.topics_for_letter(db, letter["subject"], letter["body"])
        timings = []
        fell_back = 0
        recall = 0.0
        for round_ in range(rounds):
            for letter in letters:
                t0 = time.perf_counter()
                found, fb = topics.topics_for_letter(db, letter["subject"], letter["body"])
                timings.append((time.perf_counter() - t0) * 1000)
                if round_ == 0:
                    fell_back += fb
                    hits = [m for m in found if m.slug in letter["relevant"]]
                    recall += len(hits) / min(len(letter["relevant"]), 3)
        db.close()

    timings.sort()
    q = statistics.quantiles(timings, n=100, method="inclusive")
    print(f"mailer topics bench, {dt.date.today().isoformat()}: {n} topics")
    print(f"import:   {counts['added']} added in {import_seconds:.2f} s; "
          f"re-import: {again['unchanged']} unchanged in {reimport_seconds:.2f} s")
    print(f"matching: {len(timings)} letters ({len(letters)} x {rounds}); per pass: "
          f"recall@3 {recall / len(letters):.3f} among {n - 26} generated topics, "
          f"fell back {fell_back} times")
    print(f"latency:  p50 {q[49]:.2f} ms   p90 {q[89]:.2f} ms   p99 {q[98]:.2f} ms   "
          f"max {timings[-1]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
