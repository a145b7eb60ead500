"""What does DKIM signing cost? (a benchmark, not a test; named signing.py because a
bench/dkim.py would shadow dkimpy's `dkim` package for every script in bench/)

1. Signing alone, in this process: an acknowledgement as the pipeline builds
   it and one copy of a real digest frame, each signed N times with
   ``mailer.dkim.Signer`` (dkimpy's canonicalisation, OpenSSL's RSA) and,
   for comparison, with dkimpy's own ``dkim.sign`` (all Python). Reports the
   mean and p99 milliseconds per message.
2. The weekly digest with and without signing: the real digest path of
   ``bench/digest.py`` (``run_digest`` to a loopback aiosmtpd sink, each run
   in a fresh process) alternating unsigned, signed, unsigned, signed, so
   that load from elsewhere on the machine weighs on both alike.

    .venv/bin/python bench/signing.py [--quick] [--n N] [--rounds R] [--concurrency C]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

DIGEST_BENCH = Path(__file__).resolve().parent / "digest.py"


def sample_messages() -> dict[str, bytes]:
    """An acknowledgement and a digest copy, built by mailer's own code."""
    from mailer.outbound.compose import AUTO_REPLY_HEADERS, Outgoing, build_message, make_address, render
    from mailer.config import Config
    from mailer.newsletter.digest import Frame, Markers, compose_frame
    from mailer.newsletter.subscribers import unsubscribe_token
    from mailer.outbound.templating import template_environment

    config = Config()
    env = template_environment()
    now = dt.datetime.now(dt.timezone.utc)
    topics = [{"title": f"Small changes that stay, part {i}", "url": f"https://column.example/topics/piece-{i}",
               "summary": "How to notice what has changed, protect it on bad weeks. " * 4} for i in range(5)]
    body = render(env, "acknowledgement", {
        "reader_name": "Dana Reader", "subject": "A question about change", "topics": topics[:3],
        "fell_back": False, "crisis": False, "crisis_resources": config.crisis.resources, "column": config.column,
    })
    ack = build_message(Outgoing(
        sender=make_address(config.addresses.letters, config.column.name),
        recipient=make_address("dana@example.org", "Dana Reader"), subject="Re: A question about change",
        body=body, domain=config.smtp.domain, in_reply_to="<letter-1@example.org>",
        extra_headers=AUTO_REPLY_HEADERS), clock=lambda: now).as_bytes()
    markers = Markers.new()
    frame = Frame(compose_frame(config, env, topics, digest_id=1, created=now, markers=markers), markers)
    copy = frame.copy("reader0000001@example.org", 1, unsubscribe_token(b"k" * 32, 1))
    return {"acknowledgement": ack, "digest copy": copy}


def signing_cost(n: int) -> list[list[str]]:
    """Mean and p99 ms to sign each sample with mailer's Signer and with dkimpy alone."""
    import dkim as dkimpy
    from cryptography.hazmat.primitives import serialization

    from mailer.outbound.dkim import Signer, generate_key, signed_header_names

    key = generate_key(2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    signer = Signer("bench", "column.example", key)
    rows = []
    for name, raw in sample_messages().items():
        headers = [h.decode() for h in signed_header_names(
            line.split(b":", 1)[0] for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line[:1] not in b" \t")]

        def ours() -> None:
            signer.signature(raw)

        def dkimpy_alone() -> None:
            dkimpy.sign(raw, b"bench", b"column.example", pem, canonicalize=(b"relaxed", b"relaxed"),
                        include_headers=headers)

        for label, fn in (("mailer.dkim.Signer", ours), ("dkim.sign (dkimpy alone)", dkimpy_alone)):
            fn()  # warm up
            times = []
            for _ in range(n):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1000)
            rows.append([f"{name} ({len(raw):,} bytes)", label, f"{sum(times) / n:.2f}",
                         f"{_common.percentile(times, 99):.2f}", f"{1000 / (sum(times) / n):,.0f}"])
    return rows


def digest_rates(n: int, rounds: int, concurrency: int) -> list[dict]:
    """The real digest path, unsigned and signed alternately; one dict per run."""
    with tempfile.TemporaryDirectory(prefix="bench-dkim-sink-") as folder:
        port_file = Path(folder) / "port"
        sink = subprocess.Popen([sys.executable, str(DIGEST_BENCH), "--phase", "sink", "--port-file", str(port_file)],
                                stdout=subprocess.PIPE, text=True)
        runs = []
        try:
            while not port_file.exists() or not port_file.read_text():
                if sink.poll() is not None:
                    raise SystemExit("the SMTP sink did not start")
                time.sleep(0.05)  # waiting for the sink process to bind
            port = port_file.read_text()
            for _ in range(rounds):
                for dkim in (False, True):
                    out = subprocess.run(
                        [sys.executable, str(DIGEST_BENCH), "--phase", "real", "--port", port, "--n", str(n),
                         "--concurrency", str(concurrency), *(["--dkim"] if dkim else [])],
                        check=True, capture_output=True, text=True,
                    )
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    result["dkim"] = dkim
                    runs.append(result)
                    print(f"  {'signed  ' if dkim else 'unsigned'}: {result['rate']:6.0f} msg/s "
                          f"({result['sent']:,} in {result['seconds']:.1f} s)", flush=True)
        finally:
            sink.send_signal(signal.SIGTERM)
            sink.communicate(timeout=30)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 signatures, 3,000 subscribers, one round")
    parser.add_argument("--n", type=int, default=20_000, help="subscribers per digest run (default 20,000)")
    parser.add_argument("--signatures", type=int, default=1_000, help="signatures per message and signer")
    parser.add_argument("--rounds", type=int, default=2, help="unsigned+signed pairs of digest runs (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="relay connections (digest.concurrency)")
    args = parser.parse_args()
    n, signatures, rounds = (3_000, 200, 1) if args.quick else (args.n, args.signatures, args.rounds)

    facts = _common.machine()
    print(f"{facts['cores']} cores, {facts['cpu']}, Python {facts['python']}; 2048-bit RSA key")
    _common.print_table(
        f"Signing one message ({signatures:,} times each)",
        ["message", "signer", "mean ms", "p99 ms", "per second"], signing_cost(signatures))

    print(f"\nThe digest to {n:,} subscribers, {args.concurrency} connections, loopback sink:")
    runs = digest_rates(n, rounds, args.concurrency)
    unsigned = [r["rate"] for r in runs if not r["dkim"]]
    signed = [r["rate"] for r in runs if r["dkim"]]
    _common.print_table(
        "Digest throughput (real path: send log, compact archive, checkpoint before every final dot)",
        ["", "msg/s, each run", "mean msg/s", "peak RSS MiB"],
        [["unsigned", ", ".join(f"{r:.0f}" for r in unsigned), f"{sum(unsigned) / len(unsigned):.0f}",
          f"{max(r['peak_rss_mb'] for r in runs if not r['dkim']):.0f}"],
         ["DKIM-signed", ", ".join(f"{r:.0f}" for r in signed), f"{sum(signed) / len(signed):.0f}",
          f"{max(r['peak_rss_mb'] for r in runs if r['dkim']):.0f}"]],
        [f"signed/unsigned: {sum(signed) / sum(unsigned):.2f}"],
    )


if __name__ == "__main__":
    main()
