"""DKIM: every message the column sends carries a signature a receiver can verify.

The key comes from `mailer dkim keygen`; the public half is what that command
tells the columnist to publish. Receivers are played by dkimpy's own
verifier, whose DNS lookup is answered with that very TXT record (no
network). Mail goes through the real service to a real Maildir or a real
SMTP sink, and the archive is read from the SQLite file.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import email
import itertools
import json
import re
import stat
import threading
import tomllib
from email import policy
from pathlib import Path

import dkim
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.util import parse_tag_value

from mailer.newsletter import digest as digests
from mailer.newsletter import sending
from mailer import topics
from mailer.cli import main
from mailer.config import ConfigError, DkimConfig, config_from_dict, load_config_file
from mailer.store.db import open_database
from mailer.app.background import BackgroundService
from mailer.newsletter.subscribers import token_key

from conftest import REPO, free_port, letter, rows, send, wait_for

SELECTOR = "col2026"
DOMAIN = "column.example"


# -- helpers ---------------------------------------------------------------------------

class Published:
    """What `mailer dkim keygen` printed: the record's name and value, and the key file."""

    def __init__(self, key_file: Path, output: str) -> None:
        self.key_file = key_file
        self.output = output
        self.name = re.search(r"^  name:  (\S+)$", output, re.M).group(1)
        self.value = re.search(r"^  value: (.+)$", output, re.M).group(1)

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        """DNS as a receiver sees it once the record is published: this one TXT record, nothing else."""
        return self.value.encode("ascii") if name == f"{self.name}.".encode("ascii") else None

    def verify(self, raw: bytes) -> bool:
        """dkimpy's verdict on ``raw``, as a receiver would reach it."""
        return dkim.verify(raw, dnsfunc=self.dnsfunc)


def keygen(tmp_path: Path, *args: str, out: Path | None = None):
    """Run `mailer dkim keygen` for our selector and domain; returns the click result."""
    out = out or tmp_path / "keys" / "dkim.key"
    plain = tmp_path / "plain.toml"
    plain.write_text("", encoding="utf-8")  # no [dkim] yet: keygen comes first
    return CliRunner().invoke(main, ["--config", str(plain), "dkim", "keygen", "--out", str(out),
                                     "--selector", SELECTOR, "--domain", DOMAIN, *args])


@pytest.fixture
def published(tmp_path) -> Published:
    """A fresh key from `mailer dkim keygen`, and its record as if published."""
    result = keygen(tmp_path)
    assert result.exit_code == 0, result.output
    return Published(tmp_path / "keys" / "dkim.key", result.output)


def write_config(tmp_path: Path, *, key_file: Path | None, delivery: str = "", extra: str = "") -> Path:
    """A real config file: Maildir (or the given [delivery]), and [dkim] when ``key_file`` is given."""
    path = tmp_path / "mailer.toml"
    text = (
        '[smtp]\nport = 0\n'
        f'[web]\nenabled = false\nport = {free_port()}\n'
        '[storage]\ndatabase = "mailer.db"\n'
        + (delivery or '[delivery]\nmaildir = "maildir"\nretry_base_seconds = 0.1\nretry_max_seconds = 0.5\n')
        + f'[digest]\nschedules = "{tmp_path / "schedules"}"\n'
        + extra
    )
    if key_file is not None:
        text += f'[dkim]\nselector = "{SELECTOR}"\ndomain = "{DOMAIN}"\nkey_file = "{key_file}"\n'
    path.write_text(text, encoding="utf-8")
    return path


def delivered_files(config) -> list[bytes]:
    new = Path(config.delivery.maildir) / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


def without_envelope(delivered: bytes) -> bytes:
    """A Maildir file less the Return-Path and Delivered-To lines the local delivery put on top."""
    lines = delivered.split(b"\r\n")
    while lines and lines[0].split(b":")[0].lower() in (b"return-path", b"delivered-to"):
        lines.pop(0)
    return b"\r\n".join(lines)


def signature_tags(raw: bytes) -> dict[bytes, bytes]:
    message = email.message_from_bytes(raw, policy=policy.compat32)
    return parse_tag_value(message["DKIM-Signature"].encode("ascii"))


def signed_headers(raw: bytes) -> list[str]:
    return [h.strip().decode() for h in signature_tags(raw)[b"h"].split(b":")]


def archived_raw(config, message_id_header: str) -> bytes:
    found = rows(config.storage.database, "SELECT r.raw FROM messages m JOIN raw_messages r ON r.id = m.id "
                 "WHERE m.message_id = ? AND m.direction = 'outbound'", [message_id_header])
    assert len(found) == 1
    return bytes(found[0]["raw"])


def tamper(raw: bytes) -> bytes:
    """The same message with one word of its body changed, as a forwarder might."""
    head, body = raw.split(b"\r\n\r\n", 1)
    changed = re.sub(rb"[A-Za-z]{4,}", lambda m: m.group(0).upper(), body, count=1)
    assert changed != body
    return head + b"\r\n\r\n" + changed


# -- the key ---------------------------------------------------------------------------

def test_keygen_writes_a_private_key_only_its_owner_can_read_and_prints_the_record_to_publish(tmp_path):
    result = keygen(tmp_path)
    assert result.exit_code == 0, result.output
    key_file = tmp_path / "keys" / "dkim.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048

    record = Published(key_file, result.output)
    assert record.name == f"{SELECTOR}._domainkey.{DOMAIN}"
    tags = parse_tag_value(record.value.encode("ascii"))
    assert (tags[b"v"], tags[b"k"]) == (b"DKIM1", b"rsa")
    published_key = serialization.load_der_public_key(base64.b64decode(tags[b"p"]))
    assert published_key.public_numbers() == key.public_key().public_numbers()
    # The zone-file form splits the value into DNS strings of at most 255 characters.
    zone = re.search(r'^  \S+\. IN TXT \( (.+) \)$', result.output, re.M).group(1)
    strings = re.findall(r'"([^"]*)"', zone)
    assert "".join(strings) == record.value and max(map(len, strings)) <= 255 and len(strings) > 1


def test_keygen_will_not_replace_a_key_without_force(tmp_path, published):
    before = published.key_file.read_bytes()
    again = keygen(tmp_path)
    assert again.exit_code == 1
    assert "already exists" in again.output and "--force" in again.output
    assert published.key_file.read_bytes() == before

    forced = keygen(tmp_path, "--force")
    assert forced.exit_code == 0, forced.output
    assert published.key_file.read_bytes() != before
    assert stat.S_IMODE(published.key_file.stat().st_mode) == 0o600
    assert Published(published.key_file, forced.output).value != published.value


def test_dkim_dns_prints_the_record_of_the_configured_key(tmp_path, published):
    config_file = write_config(tmp_path, key_file=published.key_file)
    result = CliRunner().invoke(main, ["--config", str(config_file), "dkim", "dns"])
    assert result.exit_code == 0, result.output
    shown = Published(published.key_file, result.output)
    assert (shown.name, shown.value) == (published.name, published.value)


def test_dkim_dns_without_a_dkim_section_says_mail_is_unsigned(tmp_path):
    result = CliRunner().invoke(main, ["--config", str(write_config(tmp_path, key_file=None)), "dkim", "dns"])
    assert result.exit_code == 1 and "no [dkim] section" in result.output


# -- what goes out is signed -----------------------------------------------------------

def test_an_acknowledgement_in_the_maildir_verifies_and_is_byte_for_byte_the_archived_copy(tmp_path, published):
    config = load_config_file(write_config(tmp_path, key_file=published.key_file))
    with BackgroundService(config) as running:
        assert send(running.smtp_port, letter("Small steps"))[0] == 250
        delivered = wait_for(lambda: delivered_files(config), message="the acknowledgement in the Maildir")[0]

    raw = without_envelope(delivered)
    assert raw.startswith(b"DKIM-Signature: ")
    assert published.verify(raw)
    assert not published.verify(tamper(raw)), "a changed body must not verify"
    tags = signature_tags(raw)
    assert (tags[b"d"], tags[b"s"], tags[b"a"], tags[b"c"]) == (
        DOMAIN.encode(), SELECTOR.encode(), b"rsa-sha256", b"relaxed/relaxed")
    names = signed_headers(raw)
    assert names.count("from") == 2, "From is signed once more than it occurs"
    for name in ("to", "subject", "date", "message-id", "in-reply-to", "references", "auto-submitted"):
        assert name in names
    message = email.message_from_bytes(raw, policy=policy.default)
    assert archived_raw(config, message["Message-ID"]) == raw
    stored = rows(config.storage.database, "SELECT size, raw_sha256, headers FROM messages WHERE message_id = ?",
                  [message["Message-ID"]])[0]
    assert stored["size"] == len(raw)
    assert json.loads(stored["headers"])[0][0] == "DKIM-Signature"


def test_a_columnist_reply_queued_by_a_command_is_signed_by_the_service(tmp_path, published):
    config_file = write_config(tmp_path, key_file=published.key_file)
    config = load_config_file(config_file)
    text = tmp_path / "reply.txt"
    text.write_text("Dear Dana,\n\nThe change you noticed is real.\n\nWarmly,\n", encoding="utf-8")
    with BackgroundService(config) as running:
        assert send(running.smtp_port, letter("A question", message_id="<dana-1@example.org>"))[0] == 250
        wait_for(lambda: delivered_files(config), message="the acknowledgement")
        thread_id = rows(config.storage.database, "SELECT thread_id FROM messages WHERE message_id = ?",
                         ["<dana-1@example.org>"])[0]["thread_id"]
        result = CliRunner().invoke(main, ["--config", str(config_file), "threads", "reply", str(thread_id),
                                           "--file", str(text)])
        assert result.exit_code == 0, result.output
        running.service.outbox.wake()
        reply = wait_for(lambda: [f for f in delivered_files(config) if b"The change you noticed" in f],
                         message="the reply in the Maildir")[0]

    raw = without_envelope(reply)
    message = email.message_from_bytes(raw, policy=policy.default)
    assert message["In-Reply-To"] == "<dana-1@example.org>"
    assert published.verify(raw)
    assert archived_raw(config, message["Message-ID"]) == raw
    assert rows(config.storage.database, "SELECT kind FROM messages WHERE message_id = ?",
                [message["Message-ID"]])[0]["kind"] == "reply"


class FlakyRelay:
    """A relay that answers 451 to the first message and 250 after; it keeps every DATA it saw."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.seen.append(bytes(envelope.original_content))
            first = len(self.seen) == 1
        return "451 4.3.0 try again later" if first else "250 2.0.0 Ok"


def test_a_retried_message_goes_out_with_the_same_single_signature_it_was_archived_with(tmp_path, published):
    relay = FlakyRelay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        delivery = (f'[delivery]\nmode = "smtp"\nrelay_port = {controller.port}\ntimeout = 5.0\n'
                    'retry_base_seconds = 0.1\nretry_max_seconds = 0.5\n')
        config = load_config_file(write_config(tmp_path, key_file=published.key_file, delivery=delivery))
        with BackgroundService(config) as running:
            assert send(running.smtp_port, letter("Retry me"))[0] == 250
            wait_for(lambda: len(relay.seen) >= 2, message="a refused attempt and an accepted one")
            wait_for(lambda: rows(config.storage.database, "SELECT status FROM outbox")[0]["status"] == "sent",
                     message="the outbox row marked sent")
    finally:
        controller.stop()
    refused, accepted = relay.seen[:2]
    assert refused == accepted, "the retry sends the bytes of the first attempt, not a new signature"
    assert accepted.count(b"DKIM-Signature:") == 1
    assert published.verify(accepted)
    message_id = email.message_from_bytes(accepted, policy=policy.default)["Message-ID"]
    assert archived_raw(config, message_id) == accepted


# -- the digest ------------------------------------------------------------------------

def test_a_digest_copy_verifies_covers_one_click_unsubscribe_and_is_what_the_archive_rebuilds(
        tmp_path, published, smtp_sink):
    delivery = f'[delivery]\nmode = "smtp"\nrelay_port = {smtp_sink.port}\ntimeout = 5.0\n'
    config = load_config_file(write_config(tmp_path, key_file=published.key_file, delivery=delivery))
    db = open_database(config.storage.database)
    today = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    topics.import_topics(db, [topics.Topic(
        slug="small-steps", title="Small steps", url="https://column.example/topics/small-steps",
        summary="How small changes stay.", keywords=("change",), published=today)],
        clock=lambda: dt.datetime.now(dt.timezone.utc))
    with db.atomic():
        for i in range(3):
            db.execute("INSERT INTO subscribers (email, status, source, created_at, updated_at, confirmed_at) "
                       "VALUES (?, 'confirmed', 'test', ?, ?, ?)", [f"reader{i}@example.org", today, today, today])
    db.close()

    # Each reading of this clock is a minute after the last (starting a day ago), so the
    # composition time and the sending times all differ.
    readings = itertools.count()
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    summary = asyncio.run(sending.run_digest(
        config, clock=lambda: start + dt.timedelta(minutes=next(readings)), key=token_key(config)))
    assert summary.sent == 3 and len(smtp_sink.messages) == 3

    db = open_database(config.storage.database)
    created = db.execute("SELECT created_at FROM digests WHERE id = ?", [summary.digest_id]).fetchone()[0]
    for message in smtp_sink.messages:
        raw = message["data"]
        assert published.verify(raw)
        assert not published.verify(tamper(raw))
        names = signed_headers(raw)
        assert "list-unsubscribe" in names and "list-unsubscribe-post" in names, "RFC 8058 one-click"
        assert {"list-id", "precedence", "auto-submitted"} <= set(names)
        # t= is the digest's composition time, so a copy signed again after a crash is the same bytes.
        assert int(signature_tags(raw)[b"t"]) == int(dt.datetime.fromisoformat(created).timestamp())
        message_id = db.execute("SELECT id FROM messages WHERE kind = 'digest' AND correspondent = ?",
                                [message["rcpt_tos"][0]]).fetchone()[0]
        assert digests.archived_bytes(db, message_id, token_key(config)) == raw
    db.close()


# -- without [dkim], and with a bad key --------------------------------------------------

def test_without_a_dkim_section_mail_goes_out_unsigned(tmp_path):
    config = load_config_file(write_config(tmp_path, key_file=None))
    assert config.dkim is None
    with BackgroundService(config) as running:
        assert send(running.smtp_port, letter("Unsigned"))[0] == 250
        delivered = wait_for(lambda: delivered_files(config), message="the acknowledgement")[0]
    assert b"dkim-signature" not in without_envelope(delivered).split(b"\r\n\r\n")[0].lower()


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere" / "dkim.key"


def _not_a_key(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("selector = col2026\n", encoding="utf-8")
    return path


def _public_key(tmp_path: Path) -> Path:
    path = tmp_path / "public.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _ec_key(tmp_path: Path) -> Path:
    path = tmp_path / "ec.pem"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def _encrypted(tmp_path: Path) -> Path:
    path = tmp_path / "locked.pem"
    path.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    return path


def _unreadable(tmp_path: Path) -> Path:
    return tmp_path  # a folder where the file should be


BAD_KEYS = [
    (_missing, "does not exist"),
    (_not_a_key, "not a PEM private key"),
    (_public_key, "not a PEM private key"),
    (_ec_key, "not an RSA key"),
    (_encrypted, "passphrase"),
    (_unreadable, "folder"),
]


@pytest.mark.parametrize("make, says", BAD_KEYS,
                         ids=["missing", "not a key", "a public key", "an EC key", "encrypted", "a folder"])
def test_a_bad_key_file_stops_the_service_at_startup_naming_dkim_key_file(tmp_path, make, says):
    key_file = make(tmp_path)
    config = load_config_file(write_config(tmp_path, key_file=key_file))
    with pytest.raises(ConfigError) as caught:
        BackgroundService(config).start()
    assert "dkim.key_file" in str(caught.value) and str(key_file) in str(caught.value)
    assert says in str(caught.value)
    assert not Path(config.storage.database).exists(), "nothing started before the key was read"


@pytest.mark.parametrize("command", [["serve"], ["digest", "send", "--quiet"]], ids=["serve", "digest send"])
def test_sending_commands_refuse_to_start_with_a_missing_key(tmp_path, command):
    key_file = tmp_path / "missing.key"
    result = CliRunner().invoke(main, ["--config", str(write_config(tmp_path, key_file=key_file)), *command])
    assert result.exit_code == 1
    assert f"dkim.key_file: {key_file} does not exist" in result.output
    assert "mailer dkim keygen" in result.output


# -- config ----------------------------------------------------------------------------

@pytest.mark.parametrize("section, says", [
    ({"selector": "s1", "domain": "elsewhere.example"}, "dkim.domain: 'elsewhere.example' is not aligned"),
    ({"selector": "s1", "domain": "mail.other.example"}, "is not aligned with 'column.example'"),
    ({"domain": DOMAIN}, "dkim.selector: required"),
    ({"selector": "s1"}, "dkim.domain: required"),
    ({"selector": "s_1", "domain": DOMAIN}, "dkim.selector: 's_1' is not a DNS name"),
    ({"selector": "s1", "domain": "column.example."}, "dkim.domain: 'column.example.' is not a DNS name"),
    ({"selector": "s1", "domain": DOMAIN, "keyfile": "x"}, "unknown key dkim.keyfile"),
    ({"selector": "s1", "domain": DOMAIN, "key_file": 7}, "dkim.key_file: expected a path"),
], ids=["another domain", "an unrelated subdomain", "no selector", "no domain", "underscore in selector",
        "trailing dot", "misspelt key", "key_file not a string"])
def test_a_bad_dkim_section_is_an_error_naming_the_key(section, says):
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"dkim": section})
    assert says in str(caught.value)


@pytest.mark.parametrize("domain", [DOMAIN, "mail.column.example"], ids=["the From domain", "a subdomain of it"])
def test_an_aligned_dkim_domain_is_accepted(domain):
    assert config_from_dict({"dkim": {"selector": "s1", "domain": domain}}).dkim.domain == domain


def test_the_parent_domain_aligns_with_from_addresses_in_a_subdomain():
    config = config_from_dict({"addresses": {"letters": "letters@news.column.example",
                                             "subscribe": "subscribe@news.column.example"},
                               "dkim": {"selector": "s1", "domain": DOMAIN}})
    assert config.dkim.domain == DOMAIN


def test_the_example_config_documents_every_dkim_key_in_its_commented_out_section():
    example = (REPO / "config.example.toml").read_text(encoding="utf-8")
    block = example[example.index("# [dkim]"):].splitlines()
    uncommented = "\n".join(line[2:] for line in block if line.startswith("# ") and not line.startswith("#  "))
    section = tomllib.loads(uncommented)["dkim"]
    assert set(section) == {f.name for f in dataclasses.fields(DkimConfig)}
    assert config_from_dict({"dkim": section}).dkim.domain == section["domain"]


def test_key_file_is_relative_to_the_config_files_folder(tmp_path):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "mailer.toml"
    path.write_text(f'[dkim]\nselector = "s1"\ndomain = "{DOMAIN}"\nkey_file = "keys/dkim.key"\n', encoding="utf-8")
    assert load_config_file(path).dkim.key_file == tmp_path / "etc" / "keys" / "dkim.key"
