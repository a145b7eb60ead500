"""Configuration: read once from TOML into typed, frozen dataclasses.

Deep code never reads files or environment variables itself; it is handed the
objects built here. Every key is documented in ``config.example.toml``.

Errors name the key (``smtp.port``) or the file, because the person reading
them is a columnist at a terminal, not a developer with a debugger.
``sections`` holds the dataclasses, ``loading`` reads TOML into them, and
``checks`` refuses values that would break the service.
"""

from mailer.config.checks import DNS_NAME  # noqa: F401
from mailer.config.loading import (  # noqa: F401
    config_from_dict,
    load_config,
    load_config_file,
    resolve_paths,
)
from mailer.config.sections import (  # noqa: F401
    DEFAULT_FILE, ENV_VAR, AcknowledgementsConfig, AddressesConfig, ColumnConfig, Config, ConfigError, CrisisConfig,
    DeliveryConfig, DigestConfig, DkimConfig, LoggingConfig, PipelineConfig, SmtpConfig, SpfConfig, StorageConfig, SubscribersConfig,
    TopicsConfig, WebConfig,
)
