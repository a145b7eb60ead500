"""What the pipeline decided about each message, in words the columnist reads.

The pipeline keeps its decision with the message (``messages.disposition``):
"acknowledged (message 12, outbox 7)", "not answered: Auto-Submitted:
auto-replied", "not answered: acknowledged 2026-11-28T10:00:00+00:00 (at
most once every 7 days)". The desk and ``threads show`` show it rewritten:
"acknowledged: 3 topics", "not answered: automatic reply (Auto-Submitted:
auto-replied)", "not answered: acknowledged 2 days ago (at most once every 7
days)". Times are counted from when the letter arrived, so the line reads
the same whenever it is looked at.
"""

from __future__ import annotations

import datetime as dt
import re

from mailer.clock import parse_iso

_ACKNOWLEDGED = re.compile(r"^acknowledged(?:: [^(]*)? \(message (\d+)")
_ACKNOWLEDGED_AT = re.compile(r"^not answered: acknowledged (\S+) \((.*)\)$")


def decision(message: dict, by_id: dict[int, dict]) -> str | None:
    """The readable decision for an inbound ``message`` (None for outbound mail).

    ``by_id`` holds the thread's messages by id, so an acknowledgement's
    topics can be counted.
    """
    if message.get("direction") != "inbound":
        return None
    disposition = message.get("disposition")
    if not disposition:
        return "waiting: the pipeline has not handled it yet" if not message.get("processed_at") else None
    found = _ACKNOWLEDGED.match(disposition)
    if found:
        answer = by_id.get(int(found.group(1)))
        meta = (answer or {}).get("meta") or {}
        n = len(meta.get("topics") or [])
        what = "acknowledged with the crisis resources" if meta.get("crisis") else "acknowledged"
        return f"{what}: {n} topic{'' if n == 1 else 's'}" if answer else what
    found = _ACKNOWLEDGED_AT.match(disposition)
    if found:
        try:
            earlier = parse_iso(found.group(1))
            arrived = parse_iso(message["created_at"])
        except (ValueError, KeyError, TypeError):
            return disposition
        return f"not answered: acknowledged {_ago(arrived - earlier)} ({found.group(2)})"
    if disposition.startswith("not answered: Auto-Submitted:"):
        return f"not answered: automatic reply ({disposition.removeprefix('not answered: ')})"
    if disposition.startswith("not answered: Precedence:"):
        return f"not answered: bulk or list mail ({disposition.removeprefix('not answered: ')})"
    return disposition


def _ago(delta: dt.timedelta) -> str:
    """'3 hours ago', '2 days ago': how long before the letter the earlier answer went."""
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 3600:
        minutes = max(seconds // 60, 1)
        return f"{minutes} minute{'' if minutes == 1 else 's'} ago"
    if seconds < 86400:
        hours = seconds // 3600
        return f"{hours} hour{'' if hours == 1 else 's'} ago"
    days = seconds // 86400
    return f"{days} day{'' if days == 1 else 's'} ago"
