"""Building outgoing messages: headers that cannot be injected, bodies from templates.

Code never concatenates mail text: bodies come from Jinja2 templates and
headers are set through ``email.message.EmailMessage`` with the SMTP policy,
after every value taken from a reader (name, subject) has been folded onto
one line and stripped of control characters. A display name full of CR/LF
therefore stays a display name.
"""

from __future__ import annotations

import email.header
import email.utils
import secrets
import json
import re
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from types import MappingProxyType
from typing import Mapping

import jinja2

from mailer.clock import Clock
from mailer.outbound.templating import inline_css
from mailer.store.parsing import CachedHeaderRegistry

#: Our own loop marker: a message carrying it (with our domain) is never answered.
LOOP_HEADER = "X-Mailer-Loop"
MAX_HEADER_TEXT = 250
MAX_DECODE_PASSES = 4
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


#: What every automatic response carries: RFC 3834's marker, and the header
#: that asks Microsoft servers not to answer it with an out-of-office.
AUTO_REPLY_HEADERS = MappingProxyType({"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"})


class AddressError(ValueError):
    """An address we cannot put in a header or an envelope."""


def header_text(value: str | None, limit: int = MAX_HEADER_TEXT) -> str:
    """A reader-supplied value made safe for one header: one line, printable, bounded.

    RFC 2047 encoded words are decoded here (repeatedly: a word can hide
    another) and cleaned after each pass, because ``EmailMessage`` would
    otherwise decode them itself when the header is set, after our cleaning,
    and put their CR, LF or NUL straight into the header block.
    """
    if not value:
        return ""
    text = _one_line(str(value))
    for _ in range(MAX_DECODE_PASSES):
        if not _ENCODED_WORD.search(text):
            break
        try:
            text = _one_line(str(email.header.make_header(email.header.decode_header(text))))
        except Exception:  # noqa: BLE001 - undecodable: neutralised below
            break
    # Whatever still looks like an encoded word is not one of ours: break its syntax.
    text = _ENCODED_WORD.sub(lambda m: m.group(0).replace("=?", "= ?"), text)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _one_line(text: str) -> str:
    if not text.isprintable():  # the common case has nothing to replace: no loop over every character
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())


def make_address(addr_spec: str, display_name: str = "") -> Address:
    """An Address for a header; raises AddressError if ``addr_spec`` is not usable."""
    addr_spec = (addr_spec or "").strip()
    if not addr_spec or any(ch in addr_spec for ch in "\r\n\0<>,; \t") or addr_spec.count("@") != 1:
        raise AddressError(f"not a usable address: {header_text(addr_spec, 80)!r}")
    local, _, domain = addr_spec.rpartition("@")
    if not local or not domain:
        raise AddressError(f"not a usable address: {header_text(addr_spec, 80)!r}")
    try:
        return Address(display_name=header_text(display_name, 80), username=local, domain=domain)
    except (ValueError, TypeError) as exc:
        raise AddressError(f"not a usable address: {exc}") from None


def reply_subject(subject: str) -> str:
    """``Re: <subject>`` without stacking prefixes; a blank subject becomes 'your letter'."""
    subject = header_text(subject) or "your letter"
    if subject[:3].casefold() == "re:":
        return subject
    return f"Re: {subject}"


def answering(row: dict | None) -> dict:
    """``in_reply_to`` and ``references`` for an Outgoing that answers an archived message row."""
    if row is None:
        return {"in_reply_to": None, "references": []}
    return {"in_reply_to": row["message_id"], "references": json.loads(row["references_ids"] or "[]")}


@dataclass
class Rendered:
    """A rendered text body and its HTML alternative."""

    text: str
    html: str | None = None


def render(env: jinja2.Environment, name: str, context: dict) -> Rendered:
    """Render ``name.txt.j2`` and, if it exists, ``name.html.j2`` with ``context``.

    The HTML part's stylesheet is inlined here, the one place mail HTML is made.
    """
    text = env.get_template(f"{name}.txt.j2").render(**context)
    try:
        html_template = env.get_template(f"{name}.html.j2")
    except jinja2.TemplateNotFound:
        return Rendered(text)
    return Rendered(text, inline_css(html_template.render(**context)))


def greeting(display_name: str | None) -> str:
    """The first line of a letter to a reader: "Dear Dana," from "Dana Reader"; else "Dear reader,"."""
    words = (display_name or "").split()
    first = words[0].strip(",;\"'") if words else ""
    if first and first.replace("-", "").replace("'", "").isalpha():
        return f"Dear {first},"
    return "Dear reader,"


@dataclass
class Outgoing:
    """Everything needed to build one outgoing message."""

    sender: Address
    recipient: Address
    subject: str
    body: Rendered
    domain: str
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    extra_headers: Mapping[str, str] = field(default_factory=dict)


#: Headers whose values are ours and the same in every message (the MIME
#: structure, the auto-reply markers): parsed once, folded once per policy.
_CONSTANT_HEADERS = frozenset({
    "mime-version", "content-type", "content-transfer-encoding", "auto-submitted",
    "x-auto-response-suppress", LOOP_HEADER.lower(),
})
#: Headers whose value is ours but not a string: the column's own address as
#: sender (an ``Address`` object, the same in every message it sends).
_OWN_ADDRESS_HEADERS = frozenset({"from"})
_MAX_CONSTANTS = 64


class _OwnHeaderRegistry(CachedHeaderRegistry):
    """The header registry of the mail we build, keeping the headers every message repeats.

    About 14 of an acknowledgement's 21 headers are the same in every message
    ("MIME-Version: 1.0", "Content-Transfer-Encoding: 7bit", the column's
    From, …); parsing each one through ``email``'s header parser cost
    ~40-100 us, every time. A header object never changes once made, so one
    object serves every message. Only the names above are kept, never a
    reader's words, and a value carrying a multipart boundary (new for every
    message) is never kept. The Date of the last message is kept too, as
    long as the next one has the same (it changes once a second).
    """

    def __init__(self) -> None:
        super().__init__()
        self._constants: dict[tuple, object] = {}
        self._last_date: tuple[str, str, object] | None = None

    def __call__(self, name, value):
        key = self._constant_key(name, value)
        if key is None:
            if isinstance(value, str) and name.lower() == "date":
                return self._date(name, value)
            return super().__call__(name, value)
        header = self._constants.get(key)
        if header is None:
            header = super().__call__(name, value)
            if len(self._constants) < _MAX_CONSTANTS:
                self._constants[key] = _keep(header)
        return header

    @staticmethod
    def _constant_key(name, value) -> tuple | None:
        lowered = name.lower()
        if isinstance(value, str):
            if lowered in _CONSTANT_HEADERS and "boundary" not in value:
                return (name, value)
        elif isinstance(value, Address) and lowered in _OWN_ADDRESS_HEADERS:
            return (name, value.display_name, value.username, value.domain)
        return None

    def _date(self, name, value):
        last = self._last_date  # read once: another thread may build a message of another second
        if last is None or last[:2] != (name, value):
            last = self._last_date = (name, value, _keep(super().__call__(name, value)))
        return last[2]


def _keep(header):
    """Mark a header object as kept: its folded bytes may be remembered on it."""
    header._folded = {}
    return header


class _OwnPolicy(policy.EmailPolicy):
    """An email policy that folds a kept header (``_OwnHeaderRegistry``) once, then reuses the bytes."""

    def fold_binary(self, name, value):
        """As ``EmailPolicy.fold_binary``, remembered for the headers every message repeats."""
        folded_by = getattr(value, "_folded", None)
        if folded_by is None:
            return super().fold_binary(name, value)
        # The generator works with clones of the message's policy (another
        # line separator for the parts), so the bytes are kept per setting
        # that folding reads, not per policy object.
        key = (name, self.utf8, self.linesep, self.max_line_length, self.cte_type, self.refold_source)
        folded = folded_by.get(key)
        if folded is None:
            folded = folded_by[key] = super().fold_binary(name, value)
        return folded


# The SMTP policies with a header registry that makes each header class once
# (the stock one builds a new class for every header set: ~18 us each) and
# keeps the headers every message repeats.
_SMTP = _OwnPolicy(linesep="\r\n", header_factory=_OwnHeaderRegistry())
_SMTPUTF8 = _OwnPolicy(linesep="\r\n", utf8=True, header_factory=_OwnHeaderRegistry())


def build_message(outgoing: Outgoing, *, clock: Clock) -> EmailMessage:
    """An RFC 5322 message with Message-ID, Date, threading headers and our loop marker."""
    needs_utf8 = not (str(outgoing.recipient.addr_spec).isascii() and str(outgoing.sender.addr_spec).isascii())
    msg = EmailMessage(policy=_SMTPUTF8 if needs_utf8 else _SMTP)
    msg["From"] = outgoing.sender
    msg["To"] = outgoing.recipient
    msg["Subject"] = header_text(outgoing.subject)
    msg["Date"] = email.utils.format_datetime(clock())
    msg["Message-ID"] = email.utils.make_msgid(domain=outgoing.domain)
    if outgoing.in_reply_to:
        msg["In-Reply-To"] = outgoing.in_reply_to
    refs = [r for r in outgoing.references if r][-20:]
    if outgoing.in_reply_to and outgoing.in_reply_to not in refs:
        refs.append(outgoing.in_reply_to)
    if refs:
        msg["References"] = " ".join(refs)
    msg[LOOP_HEADER] = outgoing.domain
    for name, value in outgoing.extra_headers.items():
        msg[name] = header_text(value, 2000)
    msg.set_content(outgoing.body.text)
    if outgoing.body.html is not None:
        msg.add_alternative(outgoing.body.html, subtype="html")
        # A boundary of our own: left unset, the generator makes a random one
        # and compiles a regular expression for it to check it against the
        # text, once per message (0.1-0.3 ms, more than the rest of the
        # boundary's work). 128 random bits after "=_", which quoted-printable
        # and base64 never produce, cannot be met in the parts.
        msg.set_boundary(f"=_{secrets.token_hex(16)}")
    return msg
