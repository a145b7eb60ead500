"""Log lines a shipper can parse: one line per event, JSON or logfmt, and never a letter's words.

`mailer serve` runs as a real child process with ``[logging] format`` set,
takes a letter whose subject, body and sender name are unmistakable, answers
it, meets a malformed HTTP request (so uvicorn has something to say) and a
public URL with a token in it, and stops on SIGTERM. Then every line of its
standard error must parse, the events must carry their fields, and none of
the letter's words, nor the token, may appear anywhere.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

from mailer import logs
from mailer.cli import main
from mailer.config import ConfigError, config_from_dict

from configfile import write_config_file
from conftest import REPO, free_port, import_example_topics, letter, make_config, rows, send, wait_for

SUBJECT = "Xylophone-Marmalade confession"
BODY = "Dear column,\r\nMy neighbour Quetzalcoatl Brandywine keeps singing at dawn.\r\n"
NAME = "Zebulon Quillfeather"
SECRETS = ("Xylophone", "Marmalade", "Quetzalcoatl", "Brandywine", "Zebulon", "Quillfeather")
TOKEN = "TokenThatMustNeverBeLoggedAAAAAAA"


# -- parsing what the process wrote ------------------------------------------------------

_LOGFMT_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[!#-<>-\[\]-~]+)(?: |$)')
_LOGFMT_ESCAPE = re.compile(r'\\(u[0-9a-f]{4}|U[0-9a-f]{8}|.)')


def parse_logfmt(line: str) -> dict:
    """A strict logfmt reader: the whole line must be key=value pairs."""
    found, pos = {}, 0
    while pos < len(line):
        pair = _LOGFMT_PAIR.match(line, pos)
        assert pair, f"not logfmt at column {pos}: {line!r}"
        key, raw = pair.groups()
        if raw.startswith('"'):
            raw = _LOGFMT_ESCAPE.sub(
                lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] in "uU" and len(m.group(1)) > 1
                else {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), raw[1:-1])
        found[key] = raw
        pos = pair.end()
    return found


PARSERS = {"json": json.loads, "logfmt": parse_logfmt}


def parsed_lines(text: str, fmt: str) -> list[dict]:
    """Every line of ``text`` parsed; a line that does not parse fails the test."""
    lines = text.split("\n")
    assert lines[-1] == "", "the output must end with a newline"
    return [PARSERS[fmt](line) for line in lines[:-1]]


# -- the child process ---------------------------------------------------------------------

@contextlib.contextmanager
def serving(config_file, stderr_path, smtp_port: int):
    """`python -m mailer --config FILE serve` until the block ends, then SIGTERM."""
    with open(stderr_path, "wb") as err, open(stderr_path.with_suffix(".out"), "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailer", "--config", str(config_file), "serve"],
                                stdout=out, stderr=err, cwd=REPO)
    try:
        def listening():
            assert proc.poll() is None, stderr_path.read_text()
            try:
                with socket.create_connection(("127.0.0.1", smtp_port), timeout=1) as sock:
                    return sock.recv(512).startswith(b"220")
            except OSError:
                return False

        wait_for(listening, timeout=30, message="mailer serve listening")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, stderr_path.read_text()


def serve_config(tmp_path, fmt: str, level: str = "info"):
    config = make_config(tmp_path, smtp={"port": free_port()}, web={"enabled": True, "port": free_port()},
                         logging={"format": fmt, "level": level})
    return config, write_config_file(config, tmp_path / "mailer.toml")


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
def test_serve_logs_one_parseable_line_per_event_and_no_letter_text(tmp_path, fmt):
    config, config_file = serve_config(tmp_path, fmt)
    import_example_topics(config)
    stderr = tmp_path / "serve.err"
    web = f"http://127.0.0.1:{config.web.port}"

    with serving(config_file, stderr, config.smtp.port):
        send(config.smtp.port, letter(SUBJECT, BODY, sender=f"{NAME} <zq@example.org>"), mail_from="zq@example.org")
        wait_for(lambda: rows(config.storage.database, "SELECT id FROM outbox WHERE status = 'sent'"),
                 message="the acknowledgement delivered")
        # A public URL carrying a token: uvicorn's access log would print it.
        assert httpx.get(f"{web}/unsubscribe/{TOKEN}", timeout=10).status_code == 404
        # Something uvicorn itself logs (at WARNING): its line must be ours too.
        with socket.create_connection(("127.0.0.1", config.web.port), timeout=5) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            sock.recv(1024)
        wait_for(lambda: "Invalid HTTP request" in stderr.read_text(), message="uvicorn's warning")

    text = stderr.read_text(encoding="utf-8")
    records = parsed_lines(text, fmt)
    for secret in SECRETS + (TOKEN,):
        assert secret not in text
        assert secret not in stderr.with_suffix(".out").read_text(encoding="utf-8")

    for record in records:
        assert {"ts", "level", "logger", "msg"} <= set(record), record
    events = {record.get("event"): record for record in records}
    letter_id = rows(config.storage.database, "SELECT id FROM messages WHERE kind = 'letter'")[0]["id"]
    stored = events["message_stored"]
    assert stored["logger"] == "mailer.listener" and stored["level"] == "info"
    assert str(stored["archive_id"]) == str(letter_id) and stored["kind"] == "letter"
    assert stored["mail_from"] == "zq@example.org" and int(stored["size"]) > len(BODY)
    assert str(events["message_processed"]["archive_id"]) == str(letter_id)
    assert events["outbox_sent"]["kind"] == "acknowledgement"
    assert "service_started" in events and "service_stopped" in events
    uvicorn = [r for r in records if r["logger"] == "uvicorn.error"]
    assert uvicorn and uvicorn[0]["level"] == "warning"


def test_level_warning_leaves_out_the_info_lines(tmp_path):
    config, config_file = serve_config(tmp_path, "json", level="warning")
    stderr = tmp_path / "serve.err"

    with serving(config_file, stderr, config.smtp.port):
        pass

    records = parsed_lines(stderr.read_text(encoding="utf-8"), "json")
    assert {r["level"] for r in records} <= {"warning", "error"}
    # Without a desk password the desk warns at every start: the warnings still come.
    assert any("no desk password" in r["msg"] for r in records)


CRASHING = """
import threading, warnings
from mailer import logs
logs.setup({fmt!r})
warnings.warn("careful\\nnow")
worker = threading.Thread(target=lambda: 1 / 0, name="worker")
worker.start()
worker.join()
raise ValueError("the end\\nof it")
"""


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
def test_warnings_and_uncaught_tracebacks_become_log_lines_too(fmt):
    done = subprocess.run([sys.executable, "-c", CRASHING.format(fmt=fmt)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    records = parsed_lines(done.stderr, fmt)
    assert [(r["logger"], r["level"]) for r in records] == [
        ("py.warnings", "warning"), ("mailer", "error"), ("mailer", "critical")]
    assert "careful\nnow" in records[0]["msg"]
    assert records[1]["event"] == "thread_crash" and records[1]["exc"].endswith("ZeroDivisionError: division by zero")
    assert records[2]["event"] == "crash" and records[2]["exc"].endswith("ValueError: the end\nof it")


# -- the formatters on their own ---------------------------------------------------------

def log_through(formatter: logging.Formatter, emit) -> str:
    """What one logger call writes through ``formatter``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def fail_with_a_traceback(logger: logging.Logger) -> None:
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        logger.exception("could not\u2028do it", extra={"event": "outbox_retry", "outbox_id": 7, "note": 'a "quoted" =x'})


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
def test_a_traceback_and_odd_characters_stay_on_one_line(fmt):
    written = log_through(logs.formatter_for(fmt), fail_with_a_traceback)

    assert written.count("\n") == 1 and written.endswith("\n")
    assert len(written.splitlines()) == 1  # not split by U+2028 either
    [record] = parsed_lines(written, fmt)
    assert record["level"] == "error" and record["event"] == "outbox_retry"
    assert str(record["outbox_id"]) == "7" and record["note"] == 'a "quoted" =x'
    assert record["msg"] == "could not\u2028do it"
    assert record["exc"].startswith("Traceback (most recent call last):")
    assert record["exc"].endswith("ValueError: first line\nsecond line")


def test_json_keeps_numbers_and_booleans_typed():
    written = log_through(logs.JsonFormatter(), lambda logger: logger.info(
        "accepted", extra={"event": "message_stored", "archive_id": 3, "duplicate": False, "msgid": None}))
    record = json.loads(written)
    assert list(record)[:5] == ["ts", "level", "logger", "event", "msg"]
    assert record["archive_id"] == 3 and record["duplicate"] is False and record["msgid"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])


def test_text_is_todays_format():
    written = log_through(logs.formatter_for("text"), lambda logger: logger.warning("outbox %d: late", 4))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING test\.logs\.\d+: outbox 4: late\n", written)


# -- configuration -------------------------------------------------------------------------

@pytest.mark.parametrize("section, expected", [
    ({"format": "yaml"}, ["logging.format", "'yaml'", '"text", "json" or "logfmt"']),
    ({"level": "loud"}, ["logging.level", "'loud'"]),
    ({"colour": True}, ["unknown key logging.colour"]),
], ids=["unknown-format", "unknown-level", "unknown-key"])
def test_bad_logging_settings_name_the_key(section, expected):
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"logging": section})
    for fragment in expected:
        assert fragment in str(caught.value)


def test_the_cli_refuses_an_unknown_log_format_naming_the_key(tmp_path):
    path = tmp_path / "mailer.toml"
    path.write_text('[logging]\nformat = "xml"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(path), "status"])
    assert result.exit_code != 0
    assert "logging.format" in result.output and "'xml'" in result.output
    assert "Traceback" not in result.output
