"""How fast is the desk on a big archive? (a benchmark, not a test)

Builds an archive of 200,000 letters (20,000 with --quick) with the archive's
own ``store_inbound`` and ``store_outbound``, in big transactions, and keeps it
under /tmp so the next run starts at once. The letters are generated: a
Zipf-like vocabulary (the words of the examples first, then made-up ones for
the long tail), log-normal body lengths (median about 1.2 kB), readers who
write more than once, replies that join their thread by In-Reply-To, and a
columnist's reply in one thread in five. Threads are then spread over the
desk's statuses (most archived, some answered, the newest new, a few urgent).

Then it times, on one connection, what the columnist waits for: the queries
each page of the web desk runs (the functions in ``mailer.web.desk`` call
these, and only these, for the page):

* the inbox page: ``desk.inbox(view="inbox")`` for page 1, then pages 2-20,
  plus ``desk.view_counts`` (the tab counts every desk page shows);
* the other tabs (urgent, new, answered, archived, all), first page, plus the counts;
* a thread page: ``desk.thread_detail`` plus ``desk.view_counts``;
* the search page: ``desk.search`` (one to three words, and a phrase) plus ``desk.view_counts``;

and reports p50 and p99 of each, how many one-word searches matched more
messages than are ranked, and the size of the database per letter.

    .venv/bin/python bench/archive.py [--quick] [--letters N] [--rounds N] [--rebuild] [--compare-ranking]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import REPO, percentile  # noqa: E402

from mailer.store import archive  # noqa: E402
from mailer import desk
from mailer.store.db import open_database  # noqa: E402
from mailer.web.desk import PAGE_SIZE  # noqa: E402

#: Bump when the generator changes, so a cached archive is rebuilt.
GENERATOR_VERSION = 1
AIM_MS = 50.0
START = dt.datetime(2021, 1, 4, 8, 0, tzinfo=dt.timezone.utc)
REPLY_SHARE = 0.3       # letters that answer an earlier letter of the same reader
COLUMNIST_SHARE = 0.2   # threads the columnist answered
SUBJECTS = [
    "What is a therapist's job?", "Is it normal to feel this tired?", "My sister and I stopped talking",
    "How do I start?", "Question about your last column", "I keep putting things off",
    "Panic before work every morning", "Should I go to therapy?", "Grief after my father died",
    "Moving to a new city alone", "Jealous of my best friend", "Can't sleep since the move",
    "My partner never listens", "Is journaling worth it?", "Burnout at 29", "Anger at my mother",
]


def vocabulary(rng: random.Random) -> list[str]:
    """Real words from the examples, most frequent first, then a long tail of made-up ones."""
    text = (REPO / "examples" / "topics.toml").read_text(encoding="utf-8")
    text += (REPO / "examples" / "letter.eml").read_text(encoding="utf-8")
    letters = REPO / "bench" / "data" / "relevance_letters.toml"
    if letters.exists():
        text += letters.read_text(encoding="utf-8")
    counts: dict[str, int] = {}
    for word in re.findall(r"[a-z']{2,}", text.lower()):
        counts[word] = counts.get(word, 0) + 1
    real = sorted(counts, key=lambda w: -counts[w])
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "den", "mar", "tel", "pro", "sen", "bi", "gu"]
    made_up = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(30000)}
    return real + sorted(made_up - set(real))


class Words:
    """Draws words with a Zipf-like skew (rank r has weight 1/r)."""

    def __init__(self, words: list[str], rng: random.Random) -> None:
        self.words = words
        self.rng = rng
        self.harmonic = math.log(len(words)) + 0.5772

    def one(self) -> str:
        # Inverse of the continuous 1/r distribution: rank = exp(u * H).
        rank = int(math.exp(self.rng.random() * self.harmonic))
        return self.words[min(rank, len(self.words)) - 1]

    def text(self, chars: int) -> str:
        lines, line, width, size = [], [], 0, 0
        while size < chars:
            word = self.one()
            line.append(word)
            width += len(word) + 1
            size += len(word) + 1
            if width > 66:
                lines.append(" ".join(line))
                line, width = [], 0
        lines.append(" ".join(line))
        return "\r\n".join(lines)


def letter_bytes(n: int, reader: int, subject: str, body: str, when: dt.datetime, in_reply_to: str | None) -> bytes:
    head = [
        f"From: Reader {reader} <reader{reader}@example.org>",
        "To: letters@column.example",
        f"Subject: {subject}",
        f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <bench.{n}@example.org>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if in_reply_to:
        head += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    return ("\r\n".join(head) + "\r\n\r\nDear column,\r\n\r\n" + body + "\r\n\r\nThank you.\r\n").encode("utf-8")


def reply_bytes(n: int, reader: int, subject: str, body: str, when: dt.datetime, in_reply_to: str) -> bytes:
    head = [
        "From: Enjoy Your Changes <letters@column.example>",
        f"To: Reader {reader} <reader{reader}@example.org>",
        f"Subject: Re: {subject}",
        f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <reply.{n}@column.example>",
        f"In-Reply-To: {in_reply_to}",
        f"References: {in_reply_to}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n\r\nThe Columnist\r\n").encode("utf-8")


def build(path: Path, letters: int, seed: int = 3) -> float:
    """Fill a new archive at ``path`` with ``letters`` letters; returns seconds taken."""
    rng = random.Random(seed)
    words = Words(vocabulary(rng), rng)
    readers = max(1, letters // 3)
    span = dt.timedelta(days=5 * 365)
    step = span / letters
    sent: dict[int, list[str]] = {}  # reader -> Message-IDs of their letters
    db = open_database(path)
    started = time.perf_counter()
    batch = 5000
    db.execute("BEGIN")
    for n in range(letters):
        now = START + step * n
        clock = (lambda moment: (lambda: moment))(now)
        reader = int(readers * rng.random() ** 1.6)  # some readers write often
        earlier = sent.get(reader)
        in_reply_to = rng.choice(earlier[-3:]) if earlier and rng.random() < REPLY_SHARE else None
        subject = rng.choice(SUBJECTS)
        if in_reply_to:
            subject = "Re: " + subject
        body = words.text(min(20_000, int(rng.lognormvariate(7.0, 0.7))))
        raw = letter_bytes(n, reader, subject, body, now, in_reply_to)
        envelope = archive.Envelope(f"reader{reader}@example.org", ("letters@column.example",), "127.0.0.1:1")
        stored = archive.store_inbound(db, raw, envelope, kind="letter", clock=clock)
        sent.setdefault(reader, []).append(f"<bench.{n}@example.org>")
        if rng.random() < COLUMNIST_SHARE:
            answer = words.text(int(rng.lognormvariate(6.5, 0.5)))
            archive.store_outbound(
                db, reply_bytes(n, reader, subject, answer, now, f"<bench.{n}@example.org>"),
                kind="reply", mail_from="letters@column.example", rcpt_to=[f"reader{reader}@example.org"],
                clock=clock, thread_id=stored.thread_id,
            )
        if (n + 1) % batch == 0:
            db.execute("COMMIT")
            print(f"\r  built {n + 1:,} of {letters:,} letters", end="", file=sys.stderr, flush=True)
            db.execute("BEGIN")
    db.execute("COMMIT")
    # The desk's statuses: the newest week is new, then answered, most older archived.
    newest = START + step * letters - dt.timedelta(days=7)
    db.execute("UPDATE threads SET status = 'archived'")
    db.execute("UPDATE threads SET status = 'answered' WHERE id % 5 = 0")
    db.execute("UPDATE threads SET status = 'new' WHERE last_message_at >= ?", [newest.isoformat(timespec="seconds")])
    db.execute("UPDATE threads SET urgent = 1 WHERE id % 97 = 0")
    db.conn.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("ANALYZE")
    db.conn.commit()
    db.close()
    print(file=sys.stderr)
    return time.perf_counter() - started


def cached_archive(letters: int, rebuild: bool) -> tuple[Path, float | None]:
    folder = Path(os.environ.get("MAILER_BENCH_CACHE", tempfile.gettempdir()))
    path = folder / f"mailer-bench-archive-v{GENERATOR_VERSION}-{letters}.db"
    if path.exists() and not rebuild:
        return path, None
    for suffix in ("", "-wal", "-shm", ".building", ".building-wal", ".building-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    building = Path(str(path) + ".building")
    print(f"building {letters:,} letters into {path} (kept for the next run) ...", file=sys.stderr)
    seconds = build(building, letters)
    building.rename(path)
    return path, seconds


def compare_ranking(db, real: list[str], rounds: int, letters: int) -> None:
    """archive.search alone, ranking every match or only the newest N: time, and the top 50 it keeps."""
    rng = random.Random(12)
    sets = {"one word": [rng.choice(real) for _ in range(rounds)],
            "three words": [" ".join(rng.choice(real) for _ in range(3)) for _ in range(rounds)]}
    rows = []
    for name, queries in sets.items():
        best = {q: {r["id"] for r in archive.search(db, q, rank_newest=None)} for q in queries}
        for newest in (None, 40_000, 20_000, 10_000, 5_000):
            capped, kept = 0, []
            ms = timed(lambda q: archive.search(db, q, rank_newest=newest), queries)
            for q in queries:
                hits = archive.search(db, q, rank_newest=newest)
                capped += bool(hits.ranked_newest)
                kept.append(len(best[q] & {r["id"] for r in hits}) / len(best[q]) if best[q] else 1.0)
            rows.append([name, f"{newest:,}" if newest else "every match", f"{percentile(ms, 50):.1f}",
                         f"{percentile(ms, 99):.1f}", f"{capped} of {len(queries)}", f"{sum(kept) / len(kept):.2f}"])
    _common.print_table(
        f"archive.search, ranking all matches or the newest N: {letters:,} letters",
        ["queries", "ranked", "p50 ms", "p99 ms", "more matches than ranked", "top 50 kept"], rows,
        ["top 50 kept: the share of the best 50 by bm25 over every match that the capped search also returns"],
    )


def timed(fn, samples: list) -> list[float]:
    out = []
    for sample in samples:
        start = time.perf_counter()
        fn(sample)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 letters instead of 200,000.")
    parser.add_argument("--letters", type=int, help="How many letters the archive holds.")
    parser.add_argument("--rounds", type=int, default=300, help="Timed runs of each query (default 300).")
    parser.add_argument("--rebuild", action="store_true", help="Build the archive again even if cached.")
    parser.add_argument("--compare-ranking", action="store_true",
                        help="Instead: time archive.search ranking every match or only the newest N, and how "
                             "much of the full ranking's top 50 each keeps.")
    args = parser.parse_args()
    letters = args.letters or (20_000 if args.quick else 200_000)
    path, build_seconds = cached_archive(letters, args.rebuild)

    db = open_database(path)  # brings a cached archive's schema forward (migration 5 on issue 6)
    rng = random.Random(5)
    n_threads = db.execute("SELECT count(*) FROM threads").fetchone()[0]
    n_messages = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    max_thread = db.execute("SELECT max(id) FROM threads").fetchone()[0]
    words = Words(vocabulary(random.Random(3)), rng)
    # Search words a columnist would type: content words of the examples (no stop words),
    # from the very common ("therapist" is in half the letters) to the rare.
    from mailer.topics import STOP_WORDS

    real = [w for w in words.words[:600] if len(w) > 3 and w.isalpha() and w not in STOP_WORDS
            and w not in ("dear", "column")][:300]
    rounds = args.rounds

    # What mailer/web/desk.py runs for each page (one more row than a page, to know if there is a next).
    def inbox_page(view_and_page: tuple[str, int]) -> None:
        view, page = view_and_page
        desk.inbox(db, view=view, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
        desk.view_counts(db)

    def thread_page(thread_id: int) -> None:
        try:
            desk.thread_detail(db, thread_id)
        except desk.ThreadNotFound:  # a forgotten thread: still a lookup, and a 404 page
            pass
        desk.view_counts(db)

    capped = []

    def search_page(query: str) -> None:
        result = desk.search(db, query)
        capped.append(bool(getattr(result, "ranked_newest", None)))
        desk.view_counts(db)

    queries = {
        "one word": [rng.choice(real) for _ in range(rounds)],
        "two words": [f"{rng.choice(real)} {rng.choice(real)}" for _ in range(rounds)],
        "three words": [" ".join(rng.choice(real) for _ in range(3)) for _ in range(rounds)],
        "a phrase": [f'"{rng.choice(real)} {rng.choice(real)}"' for _ in range(rounds)],
    }
    if args.compare_ranking:
        compare_ranking(db, real, min(rounds, 100), letters)
        return 0
    tabs = [v for v in desk.INBOX_VIEWS if v != "inbox"]
    timed(inbox_page, [("inbox", 1)] * 5)  # warm the page cache, as a running desk would have it
    results = [
        ("inbox page 1 + counts", timed(inbox_page, [("inbox", 1)] * rounds)),
        ("inbox pages 2-20 + counts", timed(inbox_page, [("inbox", rng.randint(2, 20)) for _ in range(rounds)])),
        ("other tabs, page 1 + counts", timed(inbox_page, [(tabs[i % len(tabs)], 1) for i in range(rounds)])),
        ("thread page + counts", timed(thread_page, [rng.randint(1, max_thread) for _ in range(rounds)])),
    ]
    for name, samples in queries.items():
        capped.clear()
        results.append((f"search page, {name} + counts", timed(search_page, samples)))
        if name == "one word":
            one_word_capped = sum(capped)
    db.close()

    size = sum(Path(str(path) + s).stat().st_size for s in ("", "-wal") if Path(str(path) + s).exists())
    rows = []
    worst = 0.0
    for name, ms in results:
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        worst = max(worst, p50, p99)
        rows.append([name, f"{p50:.1f}", f"{p99:.1f}", f"{max(ms):.1f}", "yes" if max(p50, p99) < AIM_MS else "NO"])
    info = _common.machine()
    limit = getattr(archive, "RANK_NEWEST", None)
    notes = [
        f"archive: {letters:,} letters, {n_messages:,} messages in {n_threads:,} threads; "
        f"{size / 1e6:,.0f} MB on disk = {size / letters / 1024:.1f} kB per letter (raw, parsed fields, FTS index)",
        f"{path}" + (f" built in {build_seconds:.0f} s ({letters / build_seconds:,.0f} letters/s)"
                     if build_seconds else " (cached; --rebuild to build it again)"),
        f"{rounds} runs of each; aim: p50 and p99 under {AIM_MS:.0f} ms: " + ("met" if worst < AIM_MS else "MISSED"),
        (f"one-word searches matching more than {limit:,} messages (only the newest {limit:,} ranked): "
         f"{one_word_capped} of {rounds}") if limit else "every match ranked (no archive.RANK_NEWEST)",
        f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, SQLite {info['sqlite']}; "
        f"load average {os.getloadavg()[0]:.1f}",
    ]
    _common.print_table(
        f"mailer archive bench, {dt.date.today().isoformat()}: {letters:,} letters",
        ["desk page", "p50 ms", "p99 ms", "max ms", f"< {AIM_MS:.0f} ms"], rows, notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
