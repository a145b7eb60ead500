"""What a letter's header may cost, measured on its raw bytes before anything reads it.

The standard ``email`` parser spends memory that grows with the square of a
header's length when the header is made of RFC 2047 encoded words (a 280 KB
Subject took 2.7 GB), and reading a message with tens of thousands of header
fields takes seconds. Neither is needed by real mail, so the listener measures
the header block here, in one pass over its lines without decoding anything,
and refuses a message that is over a limit with ``552 5.3.4`` naming it.
"""

from __future__ import annotations

from mailer.config import SmtpConfig


def header_refusal(raw: bytes, smtp: SmtpConfig) -> str | None:
    """The ``552 5.3.4`` answer for a message whose header is over a limit of ``smtp``, else None.

    The header block ends at the first empty line, or at the first line that
    is neither a field (``Name: value``) nor the continuation of one, which
    is where a parser starts reading the body too. A field is its first line
    and the folded lines after it (those starting with a space or a tab).
    """
    fields = 0
    field_bytes = 0
    position = 0
    end = len(raw)
    while position < end:
        newline = raw.find(b"\n", position)
        stop = end if newline < 0 else newline + 1
        line = raw[position:stop]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            field_bytes += len(line)
        elif b":" in line[:1000] and not line[:1].isspace():
            fields += 1
            field_bytes = len(line)
            if fields > smtp.max_header_fields:
                return (f"552 5.3.4 Too many header fields for this column "
                        f"(limit {smtp.max_header_fields} fields: smtp.max_header_fields)")
        else:
            break
        if field_bytes > smtp.max_header_bytes:
            return (f"552 5.3.4 A header field is too long for this column "
                    f"(limit {smtp.max_header_bytes} bytes per field: smtp.max_header_bytes)")
        position = stop
        if position > smtp.max_header_block_bytes:
            return (f"552 5.3.4 Message header too big for this column "
                    f"(limit {smtp.max_header_block_bytes} bytes: smtp.max_header_block_bytes)")
    return None
