"""The config file: read once, and when it is wrong, say where and how.

The person reading these errors is a columnist at a terminal, so every
message must name the file and the key (``smtp.port``), never just fail.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO
from mailer.cli import main
from mailer.config import Config, ConfigError, load_config, load_config_file, resolve_paths


def write(folder: Path, text: str, name: str = "mailer.toml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


BAD_FILES = [
    ("unknown-section", "[smtpp]\nport = 2525\n", ["unknown section [smtpp]", "known:", "smtp"]),
    ("unknown-key", "[smtp]\nprot = 2525\n", ["unknown key smtp.prot", "port"]),
    ("wrong-type", '[smtp]\nport = "2525"\n', ["smtp.port", "expected a whole number", "'2525'"]),
    ("wrong-type-bool", '[web]\nenabled = "yes"\n', ["web.enabled", "expected true or false"]),
    ("port-out-of-range", "[smtp]\nport = 70000\n", ["smtp.port", "70000", "not a TCP port"]),
    ("unknown-time-zone", '[column]\ntimezone = "Mars/Olympus_Mons"\n', ["column.timezone", "Mars/Olympus_Mons", "not a known time zone"]),
    ("invalid-toml", "[smtp\nport = 2525\n", ["not valid TOML"]),
    ("section-not-a-table", 'smtp = "fast"\n', ["smtp", "expected a [smtp] table"]),
    ("bad-delivery-mode", '[delivery]\nmode = "pigeon"\n', ["delivery.mode", "'pigeon'", '"maildir" or "smtp"']),
    ("address-without-at", '[addresses]\nletters = "letters"\n', ["addresses.letters", "'letters'", "not a full email address"]),
    ("address-with-space", '[addresses]\nbounces = "bounces @column.example"\n', ["addresses.bounces"]),
    ("addresses-not-distinct", '[addresses]\nsubscribe = "Letters@column.example"\n', ["must differ"]),
    ("empty-path", '[storage]\ndatabase = ""\n', ["storage.database", "expected a path"]),
    # Values that load but leave a service that crashes or refuses all mail.
    ("session-hours-inf", "[web]\nsession_hours = inf\n", ["web.session_hours", "finite"]),
    ("session-hours-nan", "[web]\nsession_hours = nan\n", ["web.session_hours", "finite"]),
    ("session-hours-zero", "[web]\nsession_hours = 0\n", ["web.session_hours", "more than 0"]),
    ("idle-timeout-zero", "[smtp]\nidle_timeout = 0\n", ["smtp.idle_timeout", "more than 0"]),
    ("idle-timeout-negative", "[smtp]\nidle_timeout = -5\n", ["smtp.idle_timeout", "more than 0"]),
    ("idle-timeout-inf", "[smtp]\nidle_timeout = inf\n", ["smtp.idle_timeout", "finite"]),
    ("max-recipients-zero", "[smtp]\nmax_recipients = 0\n", ["smtp.max_recipients", "1 or more"]),
    ("max-recipients-negative", "[smtp]\nmax_recipients = -1\n", ["smtp.max_recipients", "1 or more"]),
    ("max-connections-zero", "[smtp]\nmax_connections = 0\n", ["smtp.max_connections", "1 or more"]),
    ("per-client-zero", "[smtp]\nmax_connections_per_client = 0\n", ["smtp.max_connections_per_client"]),
    ("min-data-rate-zero", "[smtp]\nmin_data_rate = 0\n", ["smtp.min_data_rate", "more than 0"]),
    ("line-limit-under-rfc", "[smtp]\nmax_line_bytes = 80\n", ["smtp.max_line_bytes", "1001 or more"]),
    ("header-over-block", "[smtp]\nmax_header_bytes = 300000\n", ["smtp.max_header_bytes", "max_header_block_bytes"]),
    ("domain-with-crlf", '[smtp]\ndomain = "column.example\\r\\n250 pwned"\n', ["smtp.domain", "not a domain name"]),
    ("domain-with-lf", '[smtp]\ndomain = "column.example\\nx"\n', ["smtp.domain", "not a domain name"]),
    ("delivery-timeout-nan", "[delivery]\ntimeout = nan\n", ["delivery.timeout", "finite"]),
    ("delivery-attempts-zero", "[delivery]\nmax_attempts = 0\n", ["delivery.max_attempts", "1 or more"]),
    ("retry-negative", "[delivery]\nretry_base_seconds = -1.0\n", ["delivery.retry_base_seconds", "0 or more"]),
    ("pipeline-worker-unknown", '[pipeline]\nworker = "fork"\n', ["pipeline.worker", "'fork'", '"process" or "thread"']),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in BAD_FILES], ids=[i for i, _, _ in BAD_FILES])
def test_bad_config_file_error_names_the_file_and_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config_file(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in expected:
        assert fragment in message


def test_missing_config_file_error_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "mailer.toml"
    with pytest.raises(ConfigError, match="config file not found") as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[column]\nname = "Caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(path)


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    absolute = tmp_path / "absolute" / "maildir"
    path = write(tmp_path / "etc", (
        '[storage]\ndatabase = "var/mailer.db"\n'
        f'[delivery]\nmaildir = "{absolute}"\n'
        '[digest]\nschedules = "../schedules"\n'
    ))

    config = load_config_file(Path("..") / "etc" / "mailer.toml")

    folder = (tmp_path / "etc").resolve()
    assert config.storage.database == folder / "var" / "mailer.db"
    assert config.delivery.maildir == absolute
    assert config.digest.schedules == folder / ".." / "schedules"
    assert config.base_dir == folder
    assert config.source == path.resolve()


def test_mailer_config_environment_variable_is_honoured(tmp_path):
    path = write(tmp_path, "[smtp]\nport = 2526\n")
    config = load_config(environ={"MAILER_CONFIG": str(path)})
    assert config.smtp.port == 2526
    assert config.source == path.resolve()


def test_explicit_config_path_wins_over_the_environment_variable(tmp_path):
    from_env = write(tmp_path, "[smtp]\nport = 2526\n", "env.toml")
    explicit = write(tmp_path, "[smtp]\nport = 2527\n", "explicit.toml")
    config = load_config(explicit, environ={"MAILER_CONFIG": str(from_env)})
    assert config.smtp.port == 2527


def test_without_any_config_file_the_defaults_live_under_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.source is None
    assert config.storage.database == tmp_path.resolve() / "var" / "mailer.db"


def test_cli_reads_the_config_named_by_mailer_config(tmp_path):
    database = tmp_path / "from-env" / "archive.db"
    path = write(tmp_path, f'[storage]\ndatabase = "{database}"\n[web]\nenabled = false\n')

    result = CliRunner().invoke(main, ["subscribers", "add", "dana@example.org", "--confirmed"],
                                env={"MAILER_CONFIG": str(path)})

    assert result.exit_code == 0, result.output
    assert database.exists()  # the command opened (and made) the archive the file names


# Commands that only look. `status` has its own tests (tests/test_status.py).
READ_ONLY_COMMANDS = [["threads", "list"], ["threads", "show", "1"], ["threads", "search", "therapist"],
                      ["outbox", "list"], ["subscribers", "list"], ["digest", "list"], ["topics", "list"],
                      ["status"], ["threads", "export", "1", "--mbox", "out.mbox"], ["subscribers", "export", "-"],
                      ["digest", "raw", "1"]]


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=" ".join)
def test_a_command_that_only_reads_makes_no_database_where_a_mistyped_config_points(tmp_path, command):
    database = tmp_path / "typo" / "archive.db"
    path = write(tmp_path, f'[storage]\ndatabase = "{database}"\n')

    result = CliRunner().invoke(main, ["--config", str(path), *command])

    assert result.exit_code == 1
    assert f"there is no database at {database} (storage.database, from {path})" in result.output
    assert not database.parent.exists()


def test_cli_with_a_missing_config_file_exits_non_zero_naming_the_path(tmp_path):
    missing = tmp_path / "missing.toml"

    result = CliRunner().invoke(main, ["--config", str(missing), "threads", "list"])

    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert str(missing) in result.output
    assert "Traceback" not in result.output


def test_cli_with_a_bad_key_exits_non_zero_naming_the_key(tmp_path):
    path = write(tmp_path, "[smtp]\nprot = 25\n")
    result = CliRunner().invoke(main, ["--config", str(path), "threads", "list"])
    assert result.exit_code != 0
    assert "unknown key smtp.prot" in result.output


def test_example_config_loads_and_matches_the_defaults():
    example = load_config_file(REPO / "config.example.toml")
    defaults = resolve_paths(Config(), example.base_dir, source=example.source)
    assert example == defaults


def test_example_config_documents_every_key():
    documented = tomllib.loads((REPO / "config.example.toml").read_text(encoding="utf-8"))
    missing = [
        f"{section.name}.{key.name}"
        for section in dataclasses.fields(Config) if section.name not in ("base_dir", "source")
        # An optional section ([dkim]) is documented commented out: see tests/test_dkim.py.
        if section.default is not None
        for key in dataclasses.fields(section.default_factory())
        if key.name not in documented.get(section.name, {})
    ]
    assert missing == []
