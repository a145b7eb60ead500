"""The configuration's sections: typed, frozen dataclasses with their defaults.

Every key is documented in ``config.example.toml``; ``loading`` builds these
from TOML and ``checks`` refuses values that would break the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

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
class TopicsConfig:
    """``[topics]``: where new topics come from by themselves (the column's RSS/Atom feed)."""

    feed_url: str = ""
    feed_timeout: float = 30.0


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
class PipelineConfig:
    """``[pipeline]``: where letters are filed and answered: a worker process, or a thread of the service."""

    #: "process": a pipeline worker process beside the listener (its own core
    #: and interpreter lock, at a lower priority); "thread": in the service's
    #: own process, as a thread of its event loop.
    worker: str = "process"


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
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    subscribers: SubscribersConfig = field(default_factory=SubscribersConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
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
