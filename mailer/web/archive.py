"""The public archive of past digests: a list, one page per digest, and an Atom feed.

* ``GET /archive``               every digest that went out, newest first
* ``GET /archive/{number}``      one digest as a web page
* ``GET /archive/feed.xml``      the same digests as an Atom feed (RFC 4287)

Pages are rendered from what every copy of a digest shares (its date,
subject and topics), never from the mailed frame, so no subscriber's
address or unsubscribe token can appear in them. Readers share these links,
so they may be indexed and cached for a short while.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import xml.etree.ElementTree as ET

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailer.clock import parse_iso
from mailer.newsletter.digest import published_digests
from mailer.store.db import open_database
from mailer.web.public import page

ATOM = "http://www.w3.org/2005/Atom"
_CACHE = {"Cache-Control": "public, max-age=300", "X-Robots-Tag": "all"}


def routes() -> list:
    """The archive's routes."""
    return [
        Route("/archive", archive_index),
        Route("/archive/feed.xml", archive_feed),
        Route("/archive/{number:int}", archive_issue),
    ]


async def _digests(request: Request) -> list[dict]:
    path = request.app.state.config.storage.database

    def work():
        db = open_database(path, migrate=False)
        try:
            return published_digests(db)
        finally:
            db.close()

    issues = await asyncio.to_thread(work)
    zone = request.app.state.config.column.zone
    for issue in issues:
        issue["date"] = parse_iso(issue["created_at"]).astimezone(zone).date()
    return issues


async def archive_index(request: Request) -> Response:
    """Every digest that went out, newest first."""
    return page(request, "archive", headers=_CACHE, issues=await _digests(request))


async def archive_issue(request: Request) -> Response:
    """One digest as a web page: the pieces it listed, nothing of any subscriber."""
    number = request.path_params["number"]
    issue = next((d for d in await _digests(request) if d["id"] == number), None)
    if issue is None:
        return page(request, "archive_missing", 404, number=number)
    return page(request, "archive_issue", headers=_CACHE, issue=issue)


async def archive_feed(request: Request) -> Response:
    """The archive as an Atom feed: one entry per digest, its pieces as links."""
    config = request.app.state.config
    base = config.web.public_url.rstrip("/")
    issues = await _digests(request)
    feed = ET.Element("feed", xmlns=ATOM)
    ET.SubElement(feed, "title").text = f"{config.column.name}: the weekly digest"
    ET.SubElement(feed, "id").text = f"{base}/archive"
    ET.SubElement(feed, "link", rel="self", href=f"{base}/archive/feed.xml")
    ET.SubElement(feed, "link", rel="alternate", type="text/html", href=f"{base}/archive")
    ET.SubElement(ET.SubElement(feed, "author"), "name").text = config.column.columnist
    newest = issues[0]["created_at"] if issues else "1970-01-01T00:00:00+00:00"
    ET.SubElement(feed, "updated").text = _rfc3339(newest)
    for issue in issues:
        url = f"{base}/archive/{issue['id']}"
        entry = ET.SubElement(feed, "entry")
        ET.SubElement(entry, "title").text = issue["subject"] or f"Digest {issue['id']}"
        ET.SubElement(entry, "id").text = url
        ET.SubElement(entry, "link", rel="alternate", type="text/html", href=url)
        ET.SubElement(entry, "updated").text = _rfc3339(issue["created_at"])
        ET.SubElement(entry, "published").text = _rfc3339(issue["created_at"])
        ET.SubElement(entry, "summary").text = "; ".join(t["title"] for t in issue["topics"])
    body = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return Response(body, media_type="application/atom+xml", headers=_CACHE)


def _rfc3339(stamp: str) -> str:
    return parse_iso(stamp).astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
