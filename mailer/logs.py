"""Log lines: one line per event, as text for a terminal or JSON/logfmt for a log shipper.

``[logging] format`` picks the formatter for every logger in the process
(ours, aiosmtpd's ``mail.log``, uvicorn's, APScheduler's):

* ``text``: ``2026-11-30 08:00:01,234 INFO mailer.listener: accepted message: id=3 ...``
  (the historical format; a traceback follows on its own lines);
* ``json``: one JSON object per line, ASCII only, with ``ts``, ``level``,
  ``logger``, ``event`` (when the call names one), ``msg``, the event's fields,
  and ``exc`` for a traceback;
* ``logfmt``: the same keys as ``key=value`` pairs, values quoted when they
  need to be, newlines escaped.

With json and logfmt, Python's warnings and uncaught tracebacks (the main
thread's and other threads') become log lines too, so every line on stderr
parses.

Fields come from ``extra=`` at the call site (``log.info("...",
extra={"event": "message_stored", "archive_id": 3})``). What is never put in
a field, nor in a message: a letter's subject, body, or a sender's name.
The envelope sender's address, sizes, ids and decisions are what an operator
needs, and that is all a line carries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading

FORMATS = ("text", "json", "logfmt")
LEVELS = ("debug", "info", "warning", "error")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName",
    # uvicorn passes its message again with terminal colour codes: not a field.
    "color_message",
}
#: The keys every line starts with, in this order; fields never overwrite them.
_HEAD = ("ts", "level", "logger", "event", "msg")


def fields(record: logging.LogRecord) -> dict:
    """The structured fields a call passed with ``extra=`` (``event`` included)."""
    return {
        key: value for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value):
    """A field value as JSON knows it: numbers, booleans and None stay, the rest is text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class _StructuredFormatter(logging.Formatter):
    """The pairs both machine formats print: head keys, fields, then ``exc``/``stack``."""

    def pairs(self, record: logging.LogRecord) -> list[tuple[str, object]]:
        """The line's (key, value) pairs in print order."""
        extra = fields(record)
        out: list[tuple[str, object]] = [
            ("ts", _timestamp(record)),
            ("level", record.levelname.lower()),
            ("logger", record.name),
        ]
        if "event" in extra:
            out.append(("event", _plain(extra.pop("event"))))
        out.append(("msg", record.getMessage()))
        out.extend((key, _plain(value)) for key, value in extra.items() if key not in _HEAD)
        if record.exc_info:
            # Cached like logging.Formatter does, so a second handler need not redo it.
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out.append(("exc", record.exc_text))
        if record.stack_info:
            out.append(("stack", self.formatStack(record.stack_info)))
        return out


class JsonFormatter(_StructuredFormatter):
    """One JSON object per line (ASCII only, so no character can split the line)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        return json.dumps(dict(self.pairs(record)), ensure_ascii=True, separators=(",", ":"))


class LogfmtFormatter(_StructuredFormatter):
    """``key=value`` pairs on one line; values quoted and escaped when they need it."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one logfmt line."""
        return " ".join(f"{_logfmt_key(key)}={logfmt_value(value)}" for key, value in self.pairs(record))


#: A value that may go unquoted: printable ASCII without space, quote, backslash or '='.
_BARE = re.compile(r"[!#-<>-\[\]-~]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def logfmt_value(value) -> str:
    """One logfmt value: bare when safe, else double-quoted with backslash escapes."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif not ch.isprintable():
            # Line and paragraph separators, controls: never let one break the line.
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _logfmt_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) or "_"


def formatter_for(name: str) -> logging.Formatter:
    """The formatter for a ``[logging] format`` value."""
    if name == "json":
        return JsonFormatter()
    if name == "logfmt":
        return LogfmtFormatter()
    if name == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {name!r} (known: {', '.join(FORMATS)})")


class _MailerHandler(logging.StreamHandler):
    """Our stderr handler, marked so a second setup replaces it instead of adding another."""


def _log_uncaught(exc_type, exc, tb) -> None:
    """sys.excepthook for the machine formats: the crash's traceback as one log line."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("mailer").critical("uncaught exception: the process stops", exc_info=(exc_type, exc, tb),
                                         extra={"event": "crash"})


def _log_thread_exception(args) -> None:
    """threading.excepthook for the machine formats: a dying thread's traceback as one log line."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("mailer").error("uncaught exception in thread %s", name,
                                      exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
                                      extra={"event": "thread_crash"})


def setup(format: str = "text", level: str = "info", *, verbose: bool = False, stream=None) -> None:
    """Send every logger's records to stderr in ``format``, at ``level`` (``verbose``: debug).

    Like :func:`logging.basicConfig`, this leaves alone a root logger that
    someone else (a test runner, a program embedding mailer) has given
    handlers; our own handler from an earlier call is replaced.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _MailerHandler)]
    numeric = logging.DEBUG if verbose else getattr(logging, level.upper())
    if not ours and root.handlers:
        pass  # configured by someone else
    else:
        for handler in ours:
            root.removeHandler(handler)
        handler = _MailerHandler(stream or sys.stderr)
        handler.setFormatter(formatter_for(format))
        root.addHandler(handler)
        root.setLevel(numeric)
        # Python's warnings and uncaught tracebacks would otherwise be printed
        # to stderr over several lines, which a shipper reading JSON or logfmt
        # cannot parse: route them through the handler as well.
        logging.captureWarnings(True)
        machine = format != "text"
        sys.excepthook = _log_uncaught if machine else sys.__excepthook__
        threading.excepthook = _log_thread_exception if machine else threading.__excepthook__
    # aiosmtpd logs every command at INFO and every DATA line at DEBUG. Our
    # listener already writes the one line per message an operator needs, and
    # letter text must never reach a log, so its DEBUG is never switched on.
    logging.getLogger("mail.log").setLevel(logging.INFO if numeric <= logging.DEBUG else logging.WARNING)
