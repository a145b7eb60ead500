"""Every message mailer sends and every public page, with sample data, for the design.

``tests/test_design.py`` checks these in Chromium, and ``examples/screenshots.py``
photographs the same renders for ``docs/design.md``: what the tests look at
is what the documentation shows. Messages are rendered through
``mailer.outbound.compose.render``, the one function the service uses
(templates, then css-inline), with contexts shaped as the service builds them.
"""

from __future__ import annotations

import datetime as dt
import email
from email import policy
from pathlib import Path
from types import SimpleNamespace

from mailer.config import Config
from mailer.outbound.compose import Rendered, greeting, render
from mailer.outbound.templating import template_environment

SUBJECT = ("My sister said something at the wedding last summer and I cannot stop "
           "replaying it, night after night, whatever I try")
TOPICS = [
    SimpleNamespace(slug="sleep", title="Why Can't I Sleep?", url="https://column.example/topics/sleep",
                    summary="Nights that go on too long, what keeps them going, and what helps."),
    SimpleNamespace(slug="family", title="When Family Words Stay With You", url="https://column.example/topics/family",
                    summary="A remark at a family gathering can echo for months. Here is why, and a way to let it rest."),
    SimpleNamespace(slug="therapist", title="What Is a Therapist's Job?", url="https://column.example/topics/therapist",
                    summary="To listen, to advise, or something else?"),
]


def render_messages(config: Config) -> dict[str, Rendered]:
    """Each kind of message, rendered from the real templates: name -> text and HTML."""
    env = template_environment(config.templates_override())
    column = config.column
    ack = {
        "reader_name": "Dana Reader", "greeting": greeting("Dana Reader"), "subject": SUBJECT,
        "topics": TOPICS, "fell_back": False, "crisis": False,
        "crisis_resources": config.crisis.resources.strip(), "helplines": config.crisis,
        "letters_address": config.addresses.letters, "column": column,
    }
    site = config.web.public_url.rstrip("/")
    return {
        "acknowledgement": render(env, "acknowledgement", ack),
        "acknowledgement-crisis": render(env, "acknowledgement", {**ack, "crisis": True, "topics": TOPICS[:2]}),
        "reply": render(env, "reply", {
            "reply_text": "Thank you for writing.\n\nWhat your sister said sounds like it landed hard.",
            "paragraphs": [["Dear Dana,"], ["Thank you for writing, and for telling me about the wedding."],
                           ["What your sister said sounds like it landed somewhere tender. Replaying it at "
                            "night is the mind trying to finish a conversation that never finished."],
                           ["Warmly,"]],
            "reader_name": "Dana Reader", "subject": SUBJECT, "letter_date": "November 26, 2026",
            "quoted": ["Dear column,", "My sister said something at the wedding last summer."],
            "quote_cut": True, "column": column,
        }),
        "confirmation": render(env, "confirmation", {
            "column": column, "email": "dana@example.org",
            "confirm_url": f"{site}/subscribe/confirm/3kq0X2m7Yz8wVbN1cR5tLp9sQe4uAh6d",
            "token": "3kq0X2m7Yz8wVbN1cR5tLp9sQe4uAh6d", "subscribe_address": config.addresses.subscribe,
            "expires_hours": config.subscribers.confirm_expiry_hours,
        }),
        "notice-subscribed": render(env, "notice_subscribed", {
            "column": column, "email": "dana@example.org", "subscribe_address": config.addresses.subscribe,
            "unsubscribe_url": f"{site}/unsubscribe/1.Jq8vYw2kS0dPzXcR",
        }),
        "notice-unsubscribed": render(env, "notice_unsubscribed", {
            "column": column, "email": "dana@example.org", "subscribe_address": config.addresses.subscribe,
        }),
        "digest": render(env, "digest", {
            "column": column, "topics": [vars(t) for t in TOPICS], "email": "dana@example.org",
            "unsubscribe_url": f"{site}/unsubscribe/1.Jq8vYw2kS0dPzXcR",
            "unsubscribe_address": config.addresses.unsubscribe,
            "letters_address": config.addresses.letters, "date": dt.date(2026, 11, 30),
        }),
    }


def maildir_messages(config: Config) -> list[email.message.EmailMessage]:
    """Every message delivered to the config's Maildir, oldest first."""
    new = Path(config.delivery.maildir) / "new"
    files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns) if new.is_dir() else []
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]
