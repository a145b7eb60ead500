"""Refusing configuration values that would break the service, before anything listens."""

from __future__ import annotations

import ipaddress
import math
import re
from zoneinfo import ZoneInfoNotFoundError

from mailer.config.sections import Config, ConfigError, SpfConfig


def validate(config: Config) -> None:
    """Raise ConfigError, naming the key, for the first value the service cannot run with."""
    if config.delivery.mode not in ("maildir", "smtp"):
        raise ConfigError(
            f"delivery.mode: expected \"maildir\" or \"smtp\", got {config.delivery.mode!r}"
        )
    for name in ("port",):
        for section in ("smtp", "web"):
            port = getattr(getattr(config, section), name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{section}.{name}: {port} is not a TCP port (0-65535)")
    if not 0 <= config.delivery.relay_port <= 65535:
        raise ConfigError(f"delivery.relay_port: {config.delivery.relay_port} is not a TCP port")
    if config.smtp.max_message_bytes < 1024:
        raise ConfigError("smtp.max_message_bytes: must be at least 1024")
    for key in ("letters", "subscribe", "unsubscribe", "bounces"):
        address = getattr(config.addresses, key)
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or any(c.isspace() for c in address):
            raise ConfigError(f"addresses.{key}: {address!r} is not a full email address")
    if len(set(config.own_addresses())) != 4:
        raise ConfigError("addresses: letters, subscribe, unsubscribe and bounces must differ")
    _validate_limits(config)
    _validate_spf(config.spf)
    for key in ("accent_colour", "accent_colour_dark"):
        if not _HEX_COLOUR.fullmatch(getattr(config.column, key)):
            raise ConfigError(
                f"column.{key}: {getattr(config.column, key)!r} is not a colour like \"#2f5d50\" "
                "(# and six hex digits: mail clients do not all understand names or rgb())"
            )
    for key in ("phone", "text"):
        if not _PHONE.fullmatch(getattr(config.crisis, key)):
            raise ConfigError(
                f"crisis.{key}: {getattr(config.crisis, key)!r} is not a phone number "
                "(digits, spaces, +, - and parentheses; \"\" for none)"
            )
    if config.crisis.helpline_url and not config.crisis.helpline_url.startswith(("https://", "http://")):
        raise ConfigError(f"crisis.helpline_url: {config.crisis.helpline_url!r} must start with https://")
    try:
        config.column.zone
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"column.timezone: {config.column.timezone!r} is not a known time zone (e.g. America/New_York)"
        ) from None
    if config.logging.format not in ("text", "json", "logfmt"):
        raise ConfigError(
            f'logging.format: expected "text", "json" or "logfmt", got {config.logging.format!r}'
        )
    if config.logging.level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f'logging.level: expected "debug", "info", "warning" or "error", got {config.logging.level!r}'
        )
    if config.pipeline.worker not in ("process", "thread"):
        raise ConfigError(
            f'pipeline.worker: expected "process" or "thread", got {config.pipeline.worker!r}'
        )
    _validate_tls(config)
    _validate_dkim(config)
    _validate_topics(config)


def _validate_topics(config: Config) -> None:
    url = config.topics.feed_url
    if url and not re.match(r"^https?://[^\s/]+\S*$", url, re.IGNORECASE):
        raise ConfigError(
            f"topics.feed_url: expected the http(s) address of the column's RSS or Atom feed, got {url!r}"
        )


#: Numbers below which the service starts but cannot work (refuses all mail,
#: times every session out at once, or crashes on first use): key -> least value.
_AT_LEAST = {
    "smtp.max_recipients": 1, "smtp.max_connections": 1, "smtp.max_connections_per_client": 1,
    "smtp.max_line_bytes": 1001, "smtp.max_header_bytes": 1000, "smtp.max_header_block_bytes": 1000,
    "smtp.max_header_fields": 10, "delivery.max_attempts": 1, "delivery.concurrency": 1,
    "delivery.retry_base_seconds": 0, "delivery.retry_max_seconds": 0, "delivery.rate_limit": 0,
    "acknowledgements.topics_per_letter": 0, "acknowledgements.once_per_days": 0,
    "acknowledgements.max_per_hour": 0, "digest.concurrency": 1, "digest.batch_size": 1,
    "digest.rate_limit": 0, "digest.retry_passes": 0, "digest.grace_period_hours": 0,
    "subscribers.hard_bounce_limit": 1, "subscribers.confirmation_interval_hours": 0,
}
#: What a least value of 0 means, where it is not simply "none".
_ZERO_MEANS = {"acknowledgements.max_per_hour": "no cap", "digest.rate_limit": "no limit"}
#: Durations and rates that must be more than zero.
_MORE_THAN_ZERO = ("smtp.idle_timeout", "smtp.min_data_rate", "web.session_hours", "delivery.timeout",
                   "topics.feed_timeout", "subscribers.confirm_expiry_hours")


def _validate_limits(config: Config) -> None:
    """Limits and durations that would break the service; the SMTP domain as a host name."""
    def value(key: str):
        section, name = key.split(".")
        return getattr(getattr(config, section), name)

    for key, least in _AT_LEAST.items():
        if value(key) < least:
            meaning = f" ({_ZERO_MEANS[key]})" if key in _ZERO_MEANS else ""
            raise ConfigError(f"{key}: must be {least}{meaning} or more, got {value(key)!r}")
    for key in _MORE_THAN_ZERO:
        if value(key) <= 0:
            raise ConfigError(f"{key}: must be more than 0, got {value(key)!r}")
    if config.smtp.max_header_bytes > config.smtp.max_header_block_bytes:
        raise ConfigError("smtp.max_header_bytes: must not be more than smtp.max_header_block_bytes")
    # The domain goes into the greeting, EHLO and postmaster@: a CR or LF there
    # would let the config write SMTP lines of its own.
    if not DNS_NAME.fullmatch(config.smtp.domain) or len(config.smtp.domain) > 253:
        raise ConfigError(f"smtp.domain: {config.smtp.domain!r} is not a domain name (letters, digits, "
                          "hyphens and dots)")


def _validate_spf(spf: SpfConfig) -> None:
    """Timeouts that can end, and addresses that parse, before anything listens."""
    for key in ("dns_timeout", "time_limit", "cache_seconds"):
        if not math.isfinite(getattr(spf, key)) or getattr(spf, key) <= 0:
            raise ConfigError(f"spf.{key}: must be a number more than 0, got {getattr(spf, key)!r}")
    for key, parse in (("nameservers", _nameserver), ("skip_addresses", lambda v: ipaddress.ip_network(v, False))):
        for item in filter(None, (p.strip() for p in getattr(spf, key).split(","))):
            try:
                parse(item)
            except ValueError:
                raise ConfigError(f"spf.{key}: {item!r} is not an IP address or network "
                                  "(nameservers: an address, optionally with :port)") from None


def _nameserver(item: str) -> None:
    host, _, port = item.partition(":") if item.count(":") == 1 else (item, "", "53")
    if not 0 < int(port) < 65536:
        raise ValueError(item)
    ipaddress.ip_address(host)


_HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
_PHONE = re.compile(r"(\+?[0-9][0-9 ()-]*[0-9])?")

_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: A DKIM selector or domain (RFC 6376: dot-separated labels); `mailer dkim keygen` checks with it too.
DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


def _validate_dkim(config: Config) -> None:
    """Issue 7: [dkim] names a selector and a domain aligned with our From addresses.

    The key file itself is read when a sending command starts (mailer/dkim.py),
    so that `mailer dkim keygen` can run before the key exists.
    """
    dkim = config.dkim
    if dkim is None:
        return
    for key in ("selector", "domain"):
        value = getattr(dkim, key)
        if not value:
            raise ConfigError(f"dkim.{key}: required when there is a [dkim] section")
        if not DNS_NAME.fullmatch(value) or len(value) > 253:
            raise ConfigError(
                f"dkim.{key}: {value!r} is not a DNS name (letters, digits, hyphens and dots, "
                "no trailing dot)"
            )
    if "." not in dkim.domain:
        raise ConfigError(f"dkim.domain: {dkim.domain!r} is a top-level domain; use the column's domain")
    # An error, not a warning: a signature whose d= is not aligned with the
    # From domain counts for nothing under DMARC, and Gmail, Yahoo and
    # Outlook then file bulk mail as spam or refuse it; a warning in a log
    # would cost weeks of lost mail before anyone read it. The check is
    # DMARC's relaxed alignment without the public-suffix list: the From
    # domain is d= or a subdomain of it, or the other way round. It refuses
    # two sibling subdomains (d=a.column.example, From b.column.example) that
    # DMARC would accept, but there is always a fix that works: sign with
    # their parent, column.example, which is aligned with both.
    # Only letters and subscribe appear in From; bounces is the envelope
    # sender, which SPF aligns, and may legitimately be another domain.
    signing = dkim.domain.casefold()
    for key in ("letters", "subscribe"):
        from_domain = getattr(config.addresses, key).rpartition("@")[2].casefold()
        aligned = (from_domain == signing or from_domain.endswith("." + signing)
                   or signing.endswith("." + from_domain))
        if not aligned:
            raise ConfigError(
                f"dkim.domain: {dkim.domain!r} is not aligned with {from_domain!r}, the domain of "
                f"addresses.{key} (the From address): receivers such as Gmail and Yahoo honour a "
                f"signature only when d= is the From domain or its parent; set dkim.domain = "
                f"\"{from_domain}\""
            )


def _validate_tls(config: Config) -> None:
    """Issue 7: TLS settings that cannot work together. Files are checked at startup (tls.py)."""
    smtp, delivery = config.smtp, config.delivery
    if bool(smtp.tls_cert) != bool(smtp.tls_key):
        given, missing = ("smtp.tls_cert", "smtp.tls_key") if smtp.tls_cert else ("smtp.tls_key", "smtp.tls_cert")
        raise ConfigError(f"{missing}: {given} is set, so {missing} must be too (STARTTLS needs both)")
    if smtp.require_starttls and not smtp.tls_cert:
        raise ConfigError("smtp.require_starttls: needs smtp.tls_cert and smtp.tls_key")
    if delivery.starttls and delivery.implicit_tls:
        raise ConfigError(
            "delivery.starttls, delivery.implicit_tls: choose one (STARTTLS on port 587 or 25, "
            "implicit TLS on port 465)"
        )
    encrypted = delivery.starttls or delivery.implicit_tls
    if delivery.mode == "smtp" and delivery.username and not encrypted:
        # A password sent before TLS can be read by anyone on the path.
        raise ConfigError(
            "delivery.username: logging in to the relay needs an encrypted connection; set "
            "delivery.starttls = true (or delivery.implicit_tls = true), or leave "
            "delivery.username empty"
        )
    if delivery.mode == "smtp" and delivery.ca_file and not encrypted:
        raise ConfigError(
            "delivery.ca_file: only used with delivery.starttls or delivery.implicit_tls; "
            "without either the relay connection is not encrypted"
        )
