"""TLS (issue 7): STARTTLS on the listener; the relay reached over TLS, with a login.

Certificates are made for the test run: a throwaway CA and a server
certificate for 127.0.0.1 and localhost. The listener is the real service on
loopback; the relay is a real aiosmtpd server with STARTTLS (or implicit
TLS) and a login; the tests look at what the relay saw and at the archive.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import logging
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import (
    free_port, import_example_topics, letter, make_config, rows, send, wait_for,
)
from mailer.config import ConfigError, load_config_file
from mailer.outbound.delivery import TemporaryFailure
from mailer.newsletter.transport import Copy, DigestTransport
from mailer.app.background import BackgroundService

RELAY_USER = "column"
RELAY_PASSWORD = "correct-horse-battery-staple"
PASSWORD_ENV = "MAILER_TEST_RELAY_PASSWORD"


# -- certificates made for the test run ---------------------------------------------


@dataclass(frozen=True)
class Certs:
    """PEM files: a CA, a server certificate it signed, its key, and keys that do not fit."""

    ca: Path
    cert: Path
    key: Path
    other_key: Path
    encrypted_key: Path


def _pem_key(key, password: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    """A CA and a server certificate for 127.0.0.1/localhost, valid for a day."""
    folder = tmp_path_factory.mktemp("certs")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailer test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certs(
        ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem",
        other_key=folder / "other-key.pem", encrypted_key=folder / "encrypted-key.pem",
    )
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(_pem_key(key))
    paths.other_key.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    paths.encrypted_key.write_bytes(_pem_key(key, password=b"a passphrase"))
    return paths


def client_context(certs: Certs) -> ssl.SSLContext:
    """What a reader's server would use: verifies the listener against the test CA."""
    return ssl.create_default_context(cafile=str(certs.ca))


def server_context(certs: Certs) -> ssl.SSLContext:
    """The test relay's own certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    return context


def tls_config(tmp_path: Path, certs: Certs, **sections):
    """A test config whose listener offers STARTTLS, with the files beside the config.

    The paths are relative, as a columnist would write them: they must be read
    from the config's folder.
    """
    (tmp_path / "tls").mkdir(parents=True, exist_ok=True)
    shutil.copy(certs.cert, tmp_path / "tls" / "cert.pem")
    shutil.copy(certs.key, tmp_path / "tls" / "key.pem")
    smtp = {"tls_cert": "tls/cert.pem", "tls_key": "tls/key.pem", **sections.pop("smtp", {})}
    return make_config(tmp_path, smtp=smtp, **sections)


def ehlo_features(port: int, *, starttls_with: ssl.SSLContext | None = None) -> set[str]:
    """The extensions the listener offers (after STARTTLS, if a context is given)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("test.example")
        if starttls_with is not None:
            client.starttls(context=starttls_with)
            client.ehlo("test.example")
        return set(client.esmtp_features)


# -- the listener -------------------------------------------------------------------


def test_ehlo_offers_starttls_only_when_a_certificate_is_configured(tmp_path, certs):
    with BackgroundService(make_config(tmp_path / "plain")) as running:
        assert "starttls" not in ehlo_features(running.smtp_port)
    with BackgroundService(tls_config(tmp_path / "tls", certs)) as running:
        assert "starttls" in ehlo_features(running.smtp_port)
        after = ehlo_features(running.smtp_port, starttls_with=client_context(certs))
    # Once encrypted there is nothing more to offer; and an MX never offers AUTH.
    assert "starttls" not in after and "auth" not in after


def test_auth_after_starttls_is_refused_outright_and_no_credential_is_read_or_logged(tmp_path, certs, caplog):
    # A scanner that tries AUTH anyway must get a plain "no", not aiosmtpd's
    # dialogue (which would read its next line as a credential) or a crash.
    caplog.set_level(logging.DEBUG, logger="mail.log")
    credential = base64.b64encode(b"\0scanner\0hunter2-not-logged").decode("ascii")
    with BackgroundService(tls_config(tmp_path, certs)) as running:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as client:
            client.ehlo("test.example")
            client.starttls(context=client_context(certs))
            client.ehlo("test.example")
            for command in ("AUTH LOGIN", f"AUTH PLAIN {credential}"):
                code, reply = client.docmd(command)
                assert (code, reply[:5]) == (502, b"5.5.1"), (command, code, reply)
            assert client.noop()[0] == 250  # the session carries on
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert credential not in logged and "hunter2" not in logged
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], logged


def test_a_letter_sent_after_starttls_is_archived_byte_for_byte_and_acknowledged(tmp_path, certs, caplog):
    caplog.set_level(logging.INFO, logger="mailer.listener")
    config = tls_config(tmp_path, certs)
    import_example_topics(config)
    raw = letter("Over TLS", "Dear column,\r\nThis one came encrypted.\r\n")
    with BackgroundService(config) as running:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as client:
            client.ehlo("test.example")
            client.starttls(context=client_context(certs))
            client.ehlo("test.example")
            version = client.sock.version()
            client.mail("dana@example.org")
            client.rcpt("letters@column.example")
            code, _ = client.data(raw)
        assert code == 250
        wait_for(lambda: rows(config.storage.database,
                              "SELECT 1 FROM outbox WHERE kind = 'acknowledgement' AND status = 'sent'"),
                 message="the acknowledgement delivered")
    stored = rows(config.storage.database,
                  "SELECT r.raw, m.meta FROM raw_messages r JOIN messages m ON m.id = r.id "
                  "WHERE m.kind = 'letter'")
    assert [bytes(r["raw"]) for r in stored] == [raw]
    assert json.loads(stored[0]["meta"])["tls"] == version
    assert version in {"TLSv1.2", "TLSv1.3"}
    assert f"tls={version}" in caplog.text


def test_a_letter_in_clear_is_recorded_as_such(tmp_path, certs, caplog):
    caplog.set_level(logging.INFO, logger="mailer.listener")
    config = tls_config(tmp_path, certs)
    with BackgroundService(config) as running:
        code, _ = send(running.smtp_port, letter())  # STARTTLS offered but not used
    assert code == 250
    meta = rows(config.storage.database, "SELECT meta FROM messages WHERE kind = 'letter'")[0]["meta"]
    assert "tls" not in json.loads(meta)
    assert "tls=no" in caplog.text


def test_with_require_starttls_mail_in_clear_gets_530_and_nothing_is_archived(tmp_path, certs):
    config = tls_config(tmp_path, certs, smtp={"require_starttls": True})
    with BackgroundService(config) as running:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as client:
            client.ehlo("test.example")
            code, reply = client.mail("dana@example.org")
            assert (code, reply) == (530, b"5.7.0 Must issue a STARTTLS command first")
            assert client.rcpt("letters@column.example")[0] == 530
            assert client.docmd("DATA")[0] == 530
        assert rows(config.storage.database, "SELECT id FROM messages") == []
        # The same sender, once encrypted, is welcome.
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as client:
            client.starttls(context=client_context(certs))
            client.sendmail("dana@example.org", ["letters@column.example"], letter())
    assert len(rows(config.storage.database, "SELECT id FROM messages WHERE kind = 'letter'")) == 1


def test_a_session_that_says_starttls_still_counts_once_against_the_connection_cap(tmp_path, certs):
    # After the handshake aiosmtpd reports the connection a second time; with
    # room for one session, counting it twice would hang up on the sender.
    config = tls_config(tmp_path, certs, smtp={"max_connections": 1})
    with BackgroundService(config) as running:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as client:
            client.starttls(context=client_context(certs))
            refused = client.sendmail("dana@example.org", ["letters@column.example"], letter())
    assert refused == {}
    assert len(rows(config.storage.database, "SELECT id FROM messages WHERE kind = 'letter'")) == 1


# -- what stops `mailer serve` --------------------------------------------------------


def _write_config(tmp_path: Path, smtp: str = "", delivery: str = "") -> Path:
    path = tmp_path / "mailer.toml"
    path.write_text(
        f"[smtp]\nport = 0\n{smtp}\n[web]\nenabled = false\n[storage]\ndatabase = \"mailer.db\"\n"
        f"[delivery]\nmaildir = \"maildir\"\n{delivery}\n",
        encoding="utf-8",
    )
    return path


def _bad_setups(certs: Certs, folder: Path) -> dict[str, tuple[str, str, list[str]]]:
    """name -> ([smtp] lines, [delivery] lines, fragments the error must contain)."""
    (folder / "a-folder.pem").mkdir(exist_ok=True)
    (folder / "garbage.pem").write_text("not a key\n")
    cert, key = f'tls_cert = "{certs.cert}"', f'tls_key = "{certs.key}"'
    return {
        "missing_key": (f'{cert}\ntls_key = "missing-key.pem"', "",
                        ["smtp.tls_key", str(folder / "missing-key.pem"), "does not exist"]),
        "missing_cert": (f'tls_cert = "missing-cert.pem"\n{key}', "",
                         ["smtp.tls_cert", str(folder / "missing-cert.pem"), "does not exist"]),
        "unreadable_key": (f'{cert}\ntls_key = "a-folder.pem"', "",
                           ["smtp.tls_key", str(folder / "a-folder.pem"), "cannot read"]),
        "not_a_key": (f'{cert}\ntls_key = "garbage.pem"', "",
                      ["smtp.tls_key", str(folder / "garbage.pem"), "not a PEM private key"]),
        "not_a_cert": (f'tls_cert = "garbage.pem"\n{key}', "",
                       ["smtp.tls_cert", str(folder / "garbage.pem"), "not a PEM certificate"]),
        "mismatched_key": (f'{cert}\ntls_key = "{certs.other_key}"', "",
                           ["smtp.tls_key", str(certs.other_key), "not the private key of the certificate",
                            str(certs.cert)]),
        "key_with_passphrase": (f'{cert}\ntls_key = "{certs.encrypted_key}"', "",
                                ["smtp.tls_key", str(certs.encrypted_key), "passphrase"]),
        "only_the_cert": (cert, "", ["smtp.tls_key", "smtp.tls_cert is set"]),
        "only_the_key": (key, "", ["smtp.tls_cert", "smtp.tls_key is set"]),
        "require_starttls_without_cert": ("require_starttls = true", "", ["smtp.require_starttls"]),
        "relay_login_in_clear": ("", 'mode = "smtp"\nusername = "column"',
                                 ["delivery.username", "delivery.starttls"]),
        "relay_password_not_in_environment": (
            "", f'mode = "smtp"\nstarttls = true\nusername = "column"\npassword_env = "{PASSWORD_ENV}"',
            ["delivery.username", PASSWORD_ENV, "delivery.password_env"]),
        "relay_ca_file_missing": (
            "", 'mode = "smtp"\nstarttls = true\nca_file = "no-such-ca.pem"',
            ["delivery.ca_file", str(folder / "no-such-ca.pem"), "does not exist"]),
    }


BAD_SETUPS = [
    "missing_key", "missing_cert", "unreadable_key", "not_a_key", "not_a_cert", "mismatched_key",
    "key_with_passphrase", "only_the_cert", "only_the_key", "require_starttls_without_cert",
    "relay_login_in_clear", "relay_password_not_in_environment", "relay_ca_file_missing",
]


@pytest.mark.parametrize("setup", BAD_SETUPS, ids=BAD_SETUPS)
def test_mailer_serve_refuses_to_start_and_names_the_key_and_the_file(tmp_path, certs, setup):
    smtp, delivery, expected = _bad_setups(certs, tmp_path)[setup]
    path = _write_config(tmp_path, smtp, delivery)
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    # A real process: were the check missing, it would serve, and the timeout fail the test.
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "--config", str(path), "serve"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in expected:
        assert fragment in result.stderr, result.stderr


CONFLICTS = {
    "password_in_the_file": ('[delivery]\npassword = "hunter2-in-the-file"\n',
                             ["delivery.password", "delivery.password_env", "MAILER_RELAY_PASSWORD"]),
    "desk_password_in_the_file": ('[web]\npassword = "hunter2-in-the-file"\n',
                                  ["web.password", "web.password_env", "MAILER_DESK_PASSWORD"]),
    "starttls_and_implicit_tls": ('[delivery]\nmode = "smtp"\nstarttls = true\nimplicit_tls = true\n',
                                  ["delivery.starttls", "delivery.implicit_tls", "choose one"]),
    "ca_file_without_tls": ('[delivery]\nmode = "smtp"\nca_file = "ca.pem"\n', ["delivery.ca_file"]),
}


@pytest.mark.parametrize("name", list(CONFLICTS), ids=list(CONFLICTS))
def test_tls_settings_that_cannot_work_are_config_errors(tmp_path, name):
    text, expected = CONFLICTS[name]
    path = tmp_path / "mailer.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    for fragment in expected:
        assert fragment in str(caught.value)
    assert "hunter2-in-the-file" not in str(caught.value)


# -- the relay ------------------------------------------------------------------------


class Relay:
    """An aiosmtpd relay that records every MAIL, whether it came encrypted, and who logged in."""

    def __init__(self, *, echo_credentials: bool = False) -> None:
        self.mails: list[dict] = []
        self.messages: list[bytes] = []
        self.logins: list[tuple[str, str]] = []
        self.echo_credentials = echo_credentials
        self.lock = threading.Lock()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        """The authenticator: one user; a failed login may echo what it got (a careless relay)."""
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        with self.lock:
            self.logins.append((login, password))
        if (login, password) == (RELAY_USER, RELAY_PASSWORD):
            return AuthResult(success=True)
        if self.echo_credentials:
            encoded = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
            return AuthResult(success=False, handled=False,
                              message=f"535 5.7.8 bad login {login}:{password} ({encoded})")
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        """Record the MAIL and whether the session was encrypted and logged in."""
        with self.lock:
            self.mails.append({
                "encrypted": server.transport.get_extra_info("ssl_object") is not None,
                "authenticated": bool(session.authenticated),
            })
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        """Keep the message."""
        with self.lock:
            self.messages.append(bytes(envelope.original_content))
        return "250 2.0.0 Ok: relayed"


def start_relay(relay: Relay, **kwargs) -> Controller:
    """Run ``relay`` on a free loopback port (``kwargs`` go to aiosmtpd's SMTP)."""
    controller = Controller(relay, hostname="127.0.0.1", port=free_port(), decode_data=False, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def starttls_relay(certs):
    """A relay like a provider's submission port: STARTTLS required, then a login."""
    relay = Relay()
    controller = start_relay(relay, tls_context=server_context(certs), require_starttls=True,
                             auth_required=True, auth_require_tls=True, authenticator=relay)
    relay.port = controller.port
    yield relay
    controller.stop()


def relay_config(tmp_path: Path, certs: Certs, port: int, **delivery):
    """Deliver acknowledgements to the relay on ``port``, trusting the test CA."""
    shutil.copy(certs.ca, tmp_path / "relay-ca.pem")
    settings = {"mode": "smtp", "relay_port": port, "starttls": True, "username": RELAY_USER,
                "password_env": PASSWORD_ENV, "ca_file": "relay-ca.pem", **delivery}
    config = make_config(tmp_path, delivery=settings)
    import_example_topics(config)
    return config


def outbox(config) -> list:
    """The outbox rows, oldest first."""
    return rows(config.storage.database, "SELECT status, attempts, last_error FROM outbox ORDER BY id")


def first_row_after_attempts(config, attempts: int, message: str):
    """The first outbox row, once it has been tried ``attempts`` times."""
    wait_for(lambda: (outbox(config) or [{"attempts": 0}])[0]["attempts"] >= attempts, message=message)
    return outbox(config)[0]


def test_acknowledgement_reaches_the_relay_over_starttls_with_the_password_from_the_environment(
        tmp_path, certs, starttls_relay, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, RELAY_PASSWORD)
    config = relay_config(tmp_path, certs, starttls_relay.port)
    with BackgroundService(config) as running:
        assert send(running.smtp_port, letter(), mail_from="dana@example.org")[0] == 250
        wait_for(lambda: starttls_relay.messages, message="the acknowledgement at the relay")
        wait_for(lambda: outbox(config)[0]["status"] == "sent", message="outbox row marked sent")
    assert starttls_relay.logins == [(RELAY_USER, RELAY_PASSWORD)]
    assert starttls_relay.mails == [{"encrypted": True, "authenticated": True}]
    archived = rows(config.storage.database, "SELECT r.raw FROM raw_messages r JOIN messages m "
                    "ON m.id = r.id WHERE m.kind = 'acknowledgement'")
    assert [bytes(r["raw"]) for r in archived] == starttls_relay.messages


def test_acknowledgement_reaches_a_relay_with_implicit_tls(tmp_path, certs, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, RELAY_PASSWORD)
    relay = Relay()
    # aiosmtpd only counts STARTTLS as encryption; this session is TLS from its first byte.
    controller = start_relay(relay, ssl_context=server_context(certs), authenticator=relay,
                             auth_require_tls=False)
    try:
        config = relay_config(tmp_path, certs, controller.port, starttls=False, implicit_tls=True)
        with BackgroundService(config) as running:
            send(running.smtp_port, letter(), mail_from="dana@example.org")
            wait_for(lambda: [r for r in outbox(config) if r["status"] == "sent"],
                     message="outbox row marked sent")
    finally:
        controller.stop()
    assert relay.logins == [(RELAY_USER, RELAY_PASSWORD)]
    assert relay.mails == [{"encrypted": True, "authenticated": True}]


def test_a_relay_that_does_not_offer_starttls_gets_nothing_and_the_message_waits(tmp_path, certs):
    relay = Relay()
    controller = start_relay(relay)  # no certificate: no STARTTLS
    try:
        config = relay_config(tmp_path, certs, controller.port, username="")
        with BackgroundService(config) as running:
            send(running.smtp_port, letter(), mail_from="dana@example.org")
            row = first_row_after_attempts(config, 2, "two attempts at the relay")
    finally:
        controller.stop()
    assert relay.mails == []  # not one MAIL in clear
    assert row["status"] == "pending"
    assert "does not offer STARTTLS" in row["last_error"]


def test_a_relay_whose_certificate_is_not_trusted_gets_nothing(tmp_path, certs, starttls_relay, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, RELAY_PASSWORD)
    # No ca_file: the system's trust store, which has never heard of the test CA.
    config = relay_config(tmp_path, certs, starttls_relay.port, ca_file="")
    with BackgroundService(config) as running:
        send(running.smtp_port, letter(), mail_from="dana@example.org")
        row = first_row_after_attempts(config, 1, "an attempt at the relay")
    assert starttls_relay.logins == [] and starttls_relay.mails == []
    assert row["status"] == "pending"
    assert "not trusted" in row["last_error"] and "delivery.ca_file" in row["last_error"]


def test_a_wrong_password_is_retried_and_never_written_to_a_log_or_the_outbox(tmp_path, certs, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-horse-battery-staple"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    relay = Relay(echo_credentials=True)  # its refusal repeats the password, plain and base64
    controller = start_relay(relay, tls_context=server_context(certs), require_starttls=True,
                             auth_required=True, authenticator=relay)
    try:
        config = relay_config(tmp_path, certs, controller.port)
        with BackgroundService(config) as running:
            send(running.smtp_port, letter(), mail_from="dana@example.org")
            row = first_row_after_attempts(config, 2, "two refused logins")
    finally:
        controller.stop()
    assert relay.logins[0] == (RELAY_USER, wrong)  # the relay did get it, and said it back
    secrets = [wrong, base64.b64encode(wrong.encode()).decode(),
               base64.b64encode(f"\0{RELAY_USER}\0{wrong}".encode()).decode()]
    ours = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records if r.name.startswith("mailer"))
    assert "refused the login of delivery.username 'column'" in ours and PASSWORD_ENV in ours
    for secret in secrets:
        assert secret not in ours
        assert secret not in row["last_error"]
    assert row["status"] == "pending"  # the letter's reply is fine; the setup is not


# -- the digest uses the same connection rules --------------------------------------


def _copy(raw: bytes) -> Copy:
    return Copy(raw=raw, wire=raw, eight_bit=False, key="k1")


async def _nothing() -> None:
    """A send-log checkpoint with nothing to record."""


def test_a_digest_copy_goes_to_the_relay_over_starttls_with_a_login(tmp_path, certs, starttls_relay):
    config = relay_config(tmp_path, certs, starttls_relay.port)
    transport = DigestTransport(config.delivery, environ={PASSWORD_ENV: RELAY_PASSWORD})
    raw = letter("Digest", "This week's pieces.\r\n", to="reader@example.org")

    async def deliver() -> str:
        session = transport.session()
        try:
            return await session.send(_copy(raw), "bounces@column.example", "reader@example.org", _nothing)
        finally:
            await session.close()

    assert asyncio.run(deliver()).startswith("250")
    assert starttls_relay.messages == [raw]
    assert starttls_relay.mails == [{"encrypted": True, "authenticated": True}]


def test_a_digest_session_sends_nothing_to_a_relay_without_starttls(tmp_path, certs):
    relay = Relay()
    controller = start_relay(relay)
    try:
        config = relay_config(tmp_path, certs, controller.port, username="")
        session = DigestTransport(config.delivery, environ={}).session()
        with pytest.raises(TemporaryFailure, match="does not offer STARTTLS"):
            asyncio.run(session.send(_copy(letter()), "bounces@column.example", "reader@example.org", _nothing))
    finally:
        controller.stop()
    assert relay.mails == []

