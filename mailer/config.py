"""Configuration: read once from TOML into typed, frozen dataclasses.

Deep code never reads files or environment variables itself; it is handed the
objects built here. Every key is documented in ``config.example.toml``.

Errors name the key (``smtp.port``) or the file, because the person reading
them is a columnist at a terminal, not a developer with a debugger.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENV_VAR = "MAILER_CONFIG"
DEFAULT_FILE = "config.toml"


class ConfigError(Exception):
    """The configuration file is missing, unreadable or has a bad key."""


@dataclass(frozen=True)
class SmtpConfig:
    """``[smtp]``: where the listener binds, its domain, and its limits and TLS files."""

    host: str = "127.0.0.1"
    port: int = 8025
    domain: str = "column.example"
    max_message_bytes: int = 10 * 1024 * 1024
    max_recipients: int = 20
    idle_timeout: float = 120.0
    max_connections: int = 200
    # -- what one client and one letter may cost (see docs/architecture.md) --
    max_connections_per_client: int = 20
    min_data_rate: float = 500.0
    max_line_bytes: int = 1024 * 1024
    max_header_bytes: int = 32 * 1024
    max_header_block_bytes: int = 256 * 1024
    max_header_fields: int = 1000
    # -- STARTTLS; empty = no STARTTLS (see docs/tls.md) --
    tls_cert: str = ""
    tls_key: str = ""
    require_starttls: bool = False
    #: True when every letter comes through a front MTA (Postfix) that has
    #: already checked SPF: the peer is then that MTA, and [spf] is skipped.
    trusted_relay: bool = False


@dataclass(frozen=True)
class AddressesConfig:
    """``[addresses]``: the column's own addresses, the only recipients the listener accepts."""

    letters: str = "letters@column.example"
    subscribe: str = "subscribe@column.example"
    unsubscribe: str = "unsubscribe@column.example"
    bounces: str = "bounces@column.example"

    def all(self) -> tuple[str, ...]:
        """Every address the listener accepts mail for."""
        return (self.letters, self.subscribe, self.unsubscribe, self.bounces)


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: where the SQLite archive lives."""

    database: Path = Path("var/mailer.db")


@dataclass(frozen=True)
class DeliveryConfig:
    """``[delivery]``: how outgoing mail leaves (a Maildir, or an SMTP relay) and how it is retried."""

    mode: str = "maildir"
    maildir: Path = Path("var/maildir")
    relay_host: str = "127.0.0.1"
    relay_port: int = 25
    starttls: bool = False
    username: str = ""
    password_env: str = "MAILER_RELAY_PASSWORD"
    # -- port 465 style TLS, and a private CA to verify the relay --
    implicit_tls: bool = False
    ca_file: str = ""
    timeout: float = 30.0
    max_attempts: int = 12
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    concurrency: int = 4
    rate_limit: float = 0.0


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: the desk and the public pages: address, public URL, login secrets."""

    host: str = "127.0.0.1"
    port: int = 8026
    public_url: str = "http://127.0.0.1:8026"
    password_hash: str = ""
    password_env: str = "MAILER_DESK_PASSWORD"
    secret_key_env: str = "MAILER_SECRET_KEY"
    enabled: bool = True
    session_hours: float = 12.0
    secure_cookies: bool = False
    #: Comma-separated addresses of reverse proxies whose X-Forwarded-For is
    #: believed; empty = none, the peer address is the client.
    trusted_proxies: str = ""


@dataclass(frozen=True)
class ColumnConfig:
    """``[column]``: who the column is (name, columnist, site, timezone) and its templates."""

    name: str = "Enjoy Your Changes"
    columnist: str = "The Columnist"
    site_url: str = "https://column.example"
    timezone: str = "America/New_York"
    templates_dir: str = ""
    #: The name at the top of every message and public page ("" = the column's name).
    masthead: str = ""
    #: A short line under the masthead ("" = none).
    tagline: str = "Letters on living with change"
    #: Links, buttons and the masthead rule; a dark mode colour that reads on near-black.
    accent_colour: str = "#2f5d50"
    accent_colour_dark: str = "#8cc7b2"

    @property
    def masthead_text(self) -> str:
        """What the masthead says: ``masthead`` if set, else the column's name."""
        return self.masthead or self.name

    @property
    def zone(self) -> ZoneInfo:
        """The column's time zone (checked when the config is loaded)."""
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class AcknowledgementsConfig:
    """``[acknowledgements]``: whether and how often letters are answered automatically."""

    enabled: bool = True
    once_per_days: int = 7
    topics_per_letter: int = 3
    #: At most this many acknowledgements in any hour, whoever they go to (0 = no cap).
    max_per_hour: int = 100


@dataclass(frozen=True)
class SpfConfig:
    """``[spf]``: checking the envelope sender of every letter before it is acknowledged."""

    enabled: bool = True
    #: Comma-separated "address" or "address:port"; empty = the system's resolvers.
    nameservers: str = ""
    dns_timeout: float = 3.0
    time_limit: float = 20.0
    cache_seconds: float = 3600.0
    #: Peers never checked (local submission), as policyd-spf's skip_addresses.
    skip_addresses: str = "127.0.0.0/8, ::1"


@dataclass(frozen=True)
class CrisisConfig:
    """``[crisis]``: the resources a reader in crisis is given first."""

    resources: str = (
        "If you are in danger or thinking about ending your life, please reach out now.\n"
        "In the US: call or text 988 (Suicide & Crisis Lifeline), or call 911.\n"
        "Outside the US: call your local emergency number, or find a helpline at "
        "https://findahelpline.com."
    )
    #: A line to call and a line to text (shown as tel: and sms: links), and a helpline finder.
    phone: str = "988"
    text: str = "988"
    line_name: str = "the 988 Suicide & Crisis Lifeline"
    helpline_url: str = "https://findahelpline.com"


@dataclass(frozen=True)
class DigestConfig:
    """``[digest]``: the schedules, and how a digest run paces and batches its sends."""

    schedules: Path = Path("schedules")
    grace_period_hours: float = 72.0
    concurrency: int = 8
    rate_limit: float = 0.0
    batch_size: int = 500
    retry_passes: int = 1


@dataclass(frozen=True)
class SubscribersConfig:
    """Double opt-in, unsubscribe links and bounce handling."""

    confirm_expiry_hours: float = 72.0
    confirmation_interval_hours: float = 24.0
    hard_bounce_limit: int = 3
    token_key_file: Path = Path("var/subscribers.key")


@dataclass(frozen=True)
class LoggingConfig:
    """How log lines look: "text", "json" or "logfmt", and the least level shown."""

    format: str = "text"
    level: str = "info"


@dataclass(frozen=True)
class DkimConfig:
    """DKIM signing of every outgoing message; no [dkim] section means no signing."""

    selector: str = ""
    domain: str = ""
    key_file: Path = Path("var/dkim.key")

    def record_name(self) -> str:
        """Where receivers look the public key up: ``selector._domainkey.domain``."""
        return f"{self.selector}._domainkey.{self.domain}"


@dataclass(frozen=True)
class Config:
    """The whole configuration, loaded once; each section is a frozen dataclass."""

    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    addresses: AddressesConfig = field(default_factory=AddressesConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    web: WebConfig = field(default_factory=WebConfig)
    column: ColumnConfig = field(default_factory=ColumnConfig)
    acknowledgements: AcknowledgementsConfig = field(default_factory=AcknowledgementsConfig)
    spf: SpfConfig = field(default_factory=SpfConfig)
    crisis: CrisisConfig = field(default_factory=CrisisConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    subscribers: SubscribersConfig = field(default_factory=SubscribersConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: None when the file has no [dkim] section: mail then goes out unsigned.
    dkim: DkimConfig | None = None
    #: The folder relative paths were resolved against (the config file's folder).
    base_dir: Path = Path(".")
    #: The file this came from, or None for the embedded defaults.
    source: Path | None = None

    def templates_override(self) -> Path | None:
        """The columnist's own templates folder (searched before the built-in one), if set."""
        if not self.column.templates_dir:
            return None
        path = Path(self.column.templates_dir)
        return path if path.is_absolute() else self.base_dir / path

    def own_addresses(self) -> frozenset[str]:
        """The column's addresses, casefolded, for loop and relay checks."""
        return frozenset(a.casefold() for a in self.addresses.all())


_SECTION_TYPES = {
    f.name: f.type for f in dataclasses.fields(Config) if f.name not in ("base_dir", "source")
}


def load_config(path: str | os.PathLike | None = None, *, environ=None) -> Config:
    """Load the configuration the CLI would use.

    Precedence: an explicit ``path``; else ``$MAILER_CONFIG``; else
    ``./config.toml`` when it exists; else the embedded defaults (relative
    paths under the current folder). A path that was asked for explicitly but
    does not exist is an error, never a silent fallback.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_VAR):
        path = environ[ENV_VAR]
    if path is None:
        if Path(DEFAULT_FILE).is_file():
            path = DEFAULT_FILE
        else:
            return resolve_paths(Config(), Path.cwd().resolve(), source=None)
    return load_config_file(Path(path))


def load_config_file(path: Path) -> Config:
    """Read and validate one TOML config file."""
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        config = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return resolve_paths(config, path.resolve().parent, source=path.resolve())


def config_from_dict(data: dict) -> Config:
    """Build a Config from parsed TOML, naming the key of every problem."""
    sections = {}
    for name, value in data.items():
        if name not in _SECTION_TYPES:
            raise ConfigError(
                f"unknown section [{name}] (known: {', '.join(sorted(_SECTION_TYPES))})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a [{name}] table")
        section_cls = _resolve_type(_SECTION_TYPES[name])
        sections[name] = _build_section(name, section_cls, value)
    config = Config(**sections)
    _validate(config)
    return config


def _resolve_type(annotation):
    if isinstance(annotation, str):
        annotation = eval(annotation, globals())  # annotations are postponed strings here
    # An optional section (``DkimConfig | None``) is built as its dataclass when present.
    present = [a for a in typing.get_args(annotation) if a is not type(None)]
    return present[0] if present else annotation


#: Keys people reach for that must never be in a config file: the
#: file is copied, backed up and pasted into bug reports; the environment is not.
_SECRET_KEYS = {
    "delivery.password": "delivery.password_env",
    "web.password": "web.password_env",
}


def _build_section(section: str, cls, values: dict):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if f"{section}.{key}" in _SECRET_KEYS:
            # Never echo the value: it is a password.
            env_key = _SECRET_KEYS[f"{section}.{key}"]
            env_name = getattr(cls(), env_key.split(".")[1])
            raise ConfigError(
                f"{section}.{key}: passwords do not belong in the config file; remove it and put "
                f"the password in the environment variable named by {env_key} "
                f"(default {env_name})"
            )
        if key not in known:
            raise ConfigError(
                f"unknown key {section}.{key} (known: {', '.join(sorted(known))})"
            )
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value)
    return cls(**kwargs)


def _coerce(key: str, expected, value):
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        expected = next(a for a in typing.get_args(expected) if a is not type(None))
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # TOML allows inf and nan; no setting here means them
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if expected is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path (a non-empty string), got {value!r}")
        return Path(value)
    raise ConfigError(f"{key}: unsupported type {expected!r}")  # pragma: no cover


def _validate(config: Config) -> None:
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
    if config.acknowledgements.once_per_days < 0:
        raise ConfigError("acknowledgements.once_per_days: must be 0 or more")
    if config.acknowledgements.max_per_hour < 0:
        raise ConfigError("acknowledgements.max_per_hour: must be 0 (no cap) or more")
    _validate_spf(config.spf)
    if config.digest.concurrency < 1:
        raise ConfigError("digest.concurrency: must be 1 or more")
    if config.digest.batch_size < 1:
        raise ConfigError("digest.batch_size: must be 1 or more")
    if config.digest.rate_limit < 0:
        raise ConfigError("digest.rate_limit: must be 0 (no limit) or more")
    if config.digest.retry_passes < 0:
        raise ConfigError("digest.retry_passes: must be 0 or more")
    if config.digest.grace_period_hours < 0:
        raise ConfigError("digest.grace_period_hours: must be 0 or more")
    if config.subscribers.hard_bounce_limit < 1:
        raise ConfigError("subscribers.hard_bounce_limit: must be 1 or more")
    if config.subscribers.confirm_expiry_hours <= 0:
        raise ConfigError("subscribers.confirm_expiry_hours: must be more than 0")
    if config.subscribers.confirmation_interval_hours < 0:
        raise ConfigError("subscribers.confirmation_interval_hours: must be 0 or more")
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
    _validate_tls(config)
    _validate_dkim(config)
    _validate_limits(config)


#: Numbers below which the service starts but cannot work (refuses all mail,
#: times every session out at once, or crashes on first use): key -> least value.
_AT_LEAST = {
    "smtp.max_recipients": 1, "smtp.max_connections": 1, "smtp.max_connections_per_client": 1,
    "smtp.max_line_bytes": 1001, "smtp.max_header_bytes": 1000, "smtp.max_header_block_bytes": 1000,
    "smtp.max_header_fields": 10, "delivery.max_attempts": 1, "delivery.concurrency": 1,
    "delivery.retry_base_seconds": 0, "delivery.retry_max_seconds": 0, "delivery.rate_limit": 0,
    "acknowledgements.topics_per_letter": 0,
}
#: Durations and rates that must be more than zero.
_MORE_THAN_ZERO = ("smtp.idle_timeout", "smtp.min_data_rate", "web.session_hours", "delivery.timeout")


def _validate_limits(config: Config) -> None:
    """Limits and durations that would break the service; the SMTP domain as a host name."""
    def value(key: str):
        section, name = key.split(".")
        return getattr(getattr(config, section), name)

    for key, least in _AT_LEAST.items():
        if value(key) < least:
            raise ConfigError(f"{key}: must be {least} or more, got {value(key)!r}")
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


def resolve_paths(config: Config, base_dir: Path, *, source: Path | None) -> Config:
    """Make every relative path in the config relative to ``base_dir``."""

    def fix(path: Path) -> Path:
        return path if path.is_absolute() else (base_dir / path)

    def fix_optional(path: str) -> str:
        # "" means "not set" and stays "", not the config's folder.
        return str(fix(Path(path))) if path else ""

    return dataclasses.replace(
        config,
        storage=dataclasses.replace(config.storage, database=fix(config.storage.database)),
        smtp=dataclasses.replace(
            config.smtp, tls_cert=fix_optional(config.smtp.tls_cert),
            tls_key=fix_optional(config.smtp.tls_key),
        ),
        delivery=dataclasses.replace(
            config.delivery, maildir=fix(config.delivery.maildir),
            ca_file=fix_optional(config.delivery.ca_file),
        ),
        digest=dataclasses.replace(config.digest, schedules=fix(config.digest.schedules)),
        subscribers=dataclasses.replace(
            config.subscribers, token_key_file=fix(config.subscribers.token_key_file)
        ),
        dkim=None if config.dkim is None else dataclasses.replace(
            config.dkim, key_file=fix(config.dkim.key_file)
        ),
        base_dir=base_dir,
        source=source,
    )
