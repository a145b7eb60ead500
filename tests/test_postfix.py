"""Postfix in front: the deployment in docs/deploy.md, run for real on loopback.

A private Postfix instance plays the column's public MX. Its main.cf,
master.cf, maps, queue and log live in one temporary folder; the system's
/etc/postfix/main.cf is never read (it need not exist). It hands the column's domain to mailer's
listener through a transport map, relays mailer's outgoing mail to a real
aiosmtpd sink (standing in for the readers' servers), and refuses unknown
recipients at RCPT.

The main.cf lines, both maps and mailer's config.toml are read from the
blocks in docs/deploy.md, so the guide cannot drift from what is tested.
Only what a test on loopback needs is added: its own ports and folders, no
DNS, ``relayhost`` pointing at the sink, an empty ``mydestination``.

Postfix comes from Debian's package (`.ci/run` installs it). Where it is
absent the tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import email
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from email import policy
from pathlib import Path

import pytest

import dkim
from click.testing import CliRunner

from conftest import REPO, SmtpSink, free_port, letter, rows, wait_for
from mailer.cli import main
from mailer.config import Config, config_from_dict, resolve_paths
from mailer.app.background import BackgroundService

DEPLOY = REPO / "docs" / "deploy.md"
UNIT = REPO / "examples" / "mailer.service"
READER = "dana@example.org"
INSTALL_HINT = (
    "run as root: echo 'postfix postfix/main_mailer_type select No configuration' | "
    "debconf-set-selections && DEBIAN_FRONTEND=noninteractive apt-get install -y "
    "--no-install-recommends postfix (.ci/run does this)"
)


# -- the guide's blocks -------------------------------------------------------------


def deploy_block(title: str) -> list[str]:
    """The lines of the fenced block in docs/deploy.md whose first line is ``# title``."""
    text = DEPLOY.read_text(encoding="utf-8")
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        lines = block.splitlines()
        if lines and lines[0].strip() == f"# {title}":
            return [line for line in lines[1:] if line.strip() and not line.lstrip().startswith("#")]
    raise AssertionError(f"docs/deploy.md has no block starting with '# {title}'")


def deploy_map(title: str) -> dict[str, str]:
    """A Postfix lookup table from the guide, as key -> value."""
    return dict(line.split(None, 1) for line in deploy_block(title))


def deploy_config() -> dict:
    """mailer's config.toml from the guide, parsed."""
    return tomllib.loads("\n".join(deploy_block("/etc/mailer/config.toml")))


# -- a private Postfix ----------------------------------------------------------------


def postfix_command() -> str:
    """The postfix binary, or skip (fail under CI) with how to install it."""
    found = shutil.which("postfix") or next(
        (p for p in ("/usr/sbin/postfix", "/usr/local/sbin/postfix") if os.access(p, os.X_OK)), None
    )
    problem = None
    if found is None:
        problem = f"postfix is not installed; {INSTALL_HINT}"
    elif os.geteuid() != 0:
        problem = "a private Postfix instance must be started as root (its master daemon needs it)"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Postfix test: {problem}", pytrace=False)
        pytest.skip(problem)
    return found


class PrivatePostfix:
    """A Postfix instance of our own: config, queue, data and log under one folder."""

    # Every daemon this test needs, none chrooted (there is no chroot jail to set up).
    MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

    def __init__(self, root: Path, *, port: int, mailer_port: int, sink_port: int) -> None:
        self.command = postfix_command()
        self.root = root
        self.port = port
        self.etc = root / "etc"
        self.queue = root / "queue"
        self.log = root / "maillog"
        self.mailer_port = mailer_port
        self.sink_port = sink_port

    def write_config(self) -> None:
        """main.cf = the guide's lines (maps moved here) + what a loopback test needs."""
        self.etc.mkdir()
        (self.root / "data").mkdir()
        self.queue.mkdir()
        # The data folder is Postfix's own (master.lock, caches): the postfix user writes it.
        shutil.chown(self.root / "data", user="postfix")
        maps = {}
        for name, entries in (("transport", self._transport()),
                              ("column_recipients", deploy_map("/etc/postfix/column_recipients"))):
            (self.etc / name).write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
            maps[f"hash:/etc/postfix/{name}"] = f"texthash:{self.etc / name}"  # texthash: no postmap
        (self.etc / "column_verp").write_text("\n".join(deploy_block("/etc/postfix/column_verp")) + "\n")
        maps["regexp:/etc/postfix/column_verp"] = f"regexp:{self.etc / 'column_verp'}"
        guide = []
        for line in deploy_block("/etc/postfix/main.cf"):
            for production, here in maps.items():
                line = line.replace(production, here)
            guide.append(line)
        local = [
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue}",
            f"data_directory = {self.root / 'data'}",
            f"maillog_file_prefixes = {self.root}",
            f"maillog_file = {self.log}",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mydestination =",
            "alias_maps =",
            "alias_database =",
            # The readers' servers are the sink; no DNS anywhere.
            f"relayhost = [127.0.0.1]:{self.sink_port}",
            "smtp_dns_support_level = disabled",
            "smtp_host_lookup = native",
            # Should a hand-off fail once, retry within the test's deadline.
            "queue_run_delay = 1s",
            "minimal_backoff_time = 1s",
            "maximal_backoff_time = 2s",
        ]
        (self.etc / "main.cf").write_text("\n".join(guide + local) + "\n")
        (self.etc / "master.cf").write_text(self.MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        # Postfix will not read a file changed within the last second or two (it might be
        # half-written): it waits 300 ms at a time, up to 1.5 s per program. Date ours back.
        past = time.time() - 60
        for path in self.etc.iterdir():
            os.utime(path, (past, past))

    def _transport(self) -> dict[str, str]:
        # The guide's next hop, pointed at the port this test's mailer bound.
        transport = deploy_map("/etc/postfix/transport")
        return {domain: re.sub(r":\d+$", f":{self.mailer_port}", hop) for domain, hop in transport.items()}

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``postfix -c ETC ARGS`` and return what it said."""
        return subprocess.run([self.command, "-c", str(self.etc), *args],
                              capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        """``postfix start`` (which checks the config and creates the queue), then wait until it listens."""
        done = self.postfix("start")
        if done.returncode != 0:
            raise AssertionError(f"postfix start failed ({done.returncode}): {done.stderr}{self.tail()}")
        with self.explained():
            wait_for(self._listening, timeout=10, message=f"Postfix listening on 127.0.0.1:{self.port}")

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), smtplib.SMTP("127.0.0.1", self.port, timeout=2) as client:
            return client.noop()[0] == 250
        return False

    def master_pid(self) -> int | None:
        """The master daemon's pid while it runs."""
        try:
            pid = int((self.queue / "pid" / "master.pid").read_text().split()[0])
            # The master is not our child: once it exits it may stay a zombie until
            # init reaps it (slowly, in some containers). A zombie has stopped.
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return None if state in ("Z", "X") else pid
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the instance and wait for its master to exit (abort it if it will not)."""
        pid = self.master_pid()
        if pid is None:
            return
        self.postfix("stop")
        deadline = time.monotonic() + 10
        while self.master_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.master_pid() is not None:
            self.postfix("abort")
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        """The end of Postfix's log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            text = [f"(no log: {exc})"]
        return f"\n--- last lines of Postfix's log {self.log} ---\n" + "\n".join(text)

    @contextlib.contextmanager
    def explained(self):
        """Add the tail of Postfix's log to any assertion that fails inside."""
        try:
            yield
        except AssertionError as exc:
            raise AssertionError(f"{exc}{self.tail()}") from None


@pytest.fixture
def postfix_folder():
    """A fresh folder for a Postfix instance, removed afterwards.

    Not under tmp_path (nor $TMPDIR): Postfix's daemons run as the postfix
    user and open files by absolute path, and pytest keeps tmp_path under a
    0700 folder. /tmp is open to every user.
    """
    postfix_command()
    root = Path(tempfile.mkdtemp(prefix="mailer-postfix-", dir="/tmp"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def dkim_keygen(tmp_path: Path, selector: str, domain: str) -> tuple[Path, str]:
    """`mailer dkim keygen`, as the guide says; returns the key file and the TXT value it printed."""
    key = tmp_path / "dkim.key"
    empty = tmp_path / "keygen.toml"
    empty.write_text("")
    result = CliRunner().invoke(main, ["--config", str(empty), "dkim", "keygen", "--out", str(key),
                                       "--selector", selector, "--domain", domain])
    assert result.exit_code == 0, result.output
    value = next(line.split(":", 1)[1].strip() for line in result.output.splitlines()
                 if line.strip().startswith("value:"))
    return key, value


@dataclass
class Front:
    """A running mailer with a private Postfix in front of it, and the readers' server."""

    postfix: PrivatePostfix
    config: Config
    sink: SmtpSink
    dkim_txt: str

    def dkim_verifies(self, raw: bytes) -> bool:
        """Whether raw's DKIM signature checks out against the record the guide has us publish."""
        record = self.config.dkim.record_name()
        return dkim.verify(raw, dnsfunc=lambda name, timeout=5: self.dkim_txt.encode()
                           if name.decode().rstrip(".") == record else None)


@pytest.fixture
def front(tmp_path, smtp_sink, postfix_folder):
    """mailer configured as in the guide, with a private Postfix in front of it."""
    data = deploy_config()
    postfix_port = free_port()
    # The guide's values, except ports and files, which are this test's own.
    data["smtp"]["port"] = 0
    data["storage"] = {"database": "mailer.db"}
    data["delivery"].update(relay_port=postfix_port, retry_base_seconds=0.2, retry_max_seconds=1.0, timeout=5.0)
    data["digest"] = {"schedules": "schedules"}
    data["subscribers"] = {"token_key_file": "subscribers.key"}
    data["web"] = {"enabled": False}
    key, txt = dkim_keygen(tmp_path, data["dkim"]["selector"], data["dkim"]["domain"])
    data["dkim"]["key_file"] = str(key)
    config = resolve_paths(config_from_dict(data), tmp_path, source=None)
    with BackgroundService(config) as running:
        postfix = PrivatePostfix(postfix_folder, port=postfix_port,
                                 mailer_port=running.smtp_port, sink_port=smtp_sink.port)
        postfix.write_config()
        try:
            postfix.start()
            yield Front(postfix, config, smtp_sink, txt)
        finally:
            postfix.stop()


# -- the guide itself -------------------------------------------------------------------


def test_the_guide_s_blocks_agree_with_each_other_and_with_mailer():
    config = deploy_config()
    transport = deploy_map("/etc/postfix/transport")
    recipients = deploy_map("/etc/postfix/column_recipients")
    mailer = resolve_paths(config_from_dict(config), Path("/etc/mailer"), source=None)
    # Postfix hands the column's domain to the port mailer listens on, on loopback.
    assert transport == {mailer.smtp.domain: f"smtp:[{mailer.smtp.host}]:{mailer.smtp.port}"}
    # Postfix lets through exactly the recipients mailer accepts (its addresses and postmaster).
    accepted = {a.casefold() for a in mailer.addresses.all()} | {f"postmaster@{mailer.smtp.domain}"}
    assert set(recipients) == accepted
    # ... and the digests' VERP addresses, which mailer takes as its bounces address.
    from mailer.newsletter.verp import verp_address

    (pattern,) = deploy_map("/etc/postfix/column_verp")
    assert re.fullmatch(pattern.strip("/"), verp_address(mailer, b"k" * 32, 12345))
    assert not re.fullmatch(pattern.strip("/"), "letters+x@" + mailer.smtp.domain)
    # mailer relays through Postfix's own port 25 on loopback (in mynetworks).
    assert (mailer.delivery.mode, mailer.delivery.relay_host, mailer.delivery.relay_port) == ("smtp", "127.0.0.1", 25)
    # Postfix takes the column's domain as a relay, never as its own final destination.
    main_cf = dict(map(str.strip, line.split("=", 1)) for line in deploy_block("/etc/postfix/main.cf"))
    assert main_cf["relay_domains"] == mailer.smtp.domain and "mydestination" not in main_cf
    # mailer signs what it sends, for the column's own domain (aligned with its From).
    assert mailer.dkim is not None and mailer.dkim.domain == mailer.smtp.domain
    # Everything mailer keeps is under the unit's state directory.
    unit = UNIT.read_text()
    assert "StateDirectory=mailer" in unit
    for path in (mailer.storage.database, mailer.subscribers.token_key_file, mailer.dkim.key_file):
        assert path.is_relative_to("/var/lib/mailer"), path


# -- Postfix in front, for real -----------------------------------------------------------


@pytest.mark.slow
def test_a_letter_sent_to_postfix_is_archived_and_its_acknowledgement_leaves_through_postfix(front):
    postfix, config, sink = front.postfix, front.config, front.sink
    with postfix.explained():
        raw = letter("What is a therapist's job?",
                     "My two therapists just took my money.\r\nWhat is a therapist's job?\r\n")
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
            client.ehlo("mta.example.org")
            client.mail(READER)
            assert client.rcpt("letters@column.example")[0] == 250
            code, reply = client.data(raw)
        assert code == 250, reply  # Postfix queued it ...

        # ... and handed it to mailer, which archived it: Postfix's Received header on top
        # of the reader's bytes, byte for byte, with the envelope Postfix was given.
        stored = wait_for(lambda: rows(config.storage.database,
                                       "SELECT m.mail_from, m.rcpt_to, m.peer, r.raw FROM messages m "
                                       "JOIN raw_messages r ON r.id = m.id WHERE m.kind = 'letter'"),
                          message="the letter in mailer's archive")
        assert len(stored) == 1
        archived = bytes(stored[0]["raw"])
        assert archived.endswith(raw)
        added = archived[: -len(raw)]
        assert [name for name, _ in email.message_from_bytes(added + b"\r\n").items()] == ["Received"], added
        assert re.match(rb"Received: from mta\.example\.org \(\S+ \[127\.0\.0\.1\]\)\r\n"
                        rb"\s+by mx\.column\.example \(Postfix\) with ESMTP", added), added
        assert stored[0]["mail_from"] == READER
        assert stored[0]["rcpt_to"] == '["letters@column.example"]'
        assert stored[0]["peer"].startswith("127.0.0.1:")

        # The acknowledgement went back through Postfix to the reader's server (the sink).
        got = wait_for(lambda: list(sink.messages), message="the acknowledgement at the readers' server")
        assert len(got) == 1
        ack = got[0]
        assert ack["mail_from"] == "<>"  # still the null reverse path: it can never bounce back
        assert ack["rcpt_tos"] == [READER]
        parsed = email.message_from_bytes(ack["data"], policy=policy.default)
        assert parsed["From"].addresses[0].addr_spec == "letters@column.example"
        assert parsed["To"].addresses[0].addr_spec == READER
        assert parsed["Auto-Submitted"] == "auto-replied"
        # Postfix added its Received header (it passed through Postfix, not around it) and
        # changed nothing else: what the reader gets is what mailer archived and signed,
        # and the DKIM signature still verifies against the record the guide publishes.
        assert front.dkim_verifies(ack["data"])
        assert parsed["DKIM-Signature"] is not None and "d=column.example" in parsed["DKIM-Signature"]
        assert re.search(r"from \S+ \(\S+ \[127\.0\.0\.1\]\)\s+by mx\.column\.example \(Postfix\)",
                         parsed.get_all("Received")[0]), parsed.get_all("Received")
        sent = rows(config.storage.database,
                    "SELECT r.raw FROM raw_messages r JOIN messages m ON m.id = r.id WHERE m.kind = 'acknowledgement'")
        assert ack["data"].endswith(bytes(sent[0]["raw"]))
        assert email.message_from_bytes(ack["data"][: -len(sent[0]["raw"])] + b"\r\n").keys() == ["Received"]


@pytest.mark.slow
def test_postfix_refuses_at_rcpt_a_recipient_mailer_would_refuse(front):
    postfix, config, sink = front.postfix, front.config, front.sink
    with postfix.explained():
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
            client.ehlo("mta.example.org")
            client.mail(READER)
            code, reply = client.rcpt("nobody@column.example")
            assert (code, reply[:5]) == (550, b"5.1.1"), reply
            assert b"relay recipient table" in reply
            # The column's real addresses still pass, in the same session.
            assert client.rcpt("postmaster@column.example")[0] == 250
            client.rset()
        # Refused at the door: nothing queued for mailer, so no bounce to a (forged) sender.
        assert rows(config.storage.database, "SELECT id FROM messages") == []
        assert sink.messages == []


@pytest.mark.slow
def test_a_bounce_to_a_digest_s_verp_address_gets_through_postfix_to_mailer(front):
    # Digests leave from bounces+TOKEN@ (VERP); the guide's recipient_delimiter
    # lets Postfix find bounces@ in the recipient table, and mailer takes it.
    postfix, config = front.postfix, front.config
    verp = "bounces+abcdefghijklmnopqrstuvwxyz234@column.example"
    with postfix.explained():
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
            client.ehlo("mx.example.net")
            client.mail("")
            assert client.rcpt(verp)[0] == 250
            assert client.rcpt("letters+tag@column.example")[0] == 550  # only the bounces address takes tags
            code, reply = client.data((REPO / "tests" / "fixtures" / "bounces" / "qmail_01.txt")
                                      .read_bytes().replace(b"\n", b"\r\n"))
        assert code == 250, reply
        stored = wait_for(lambda: rows(config.storage.database,
                                       "SELECT rcpt_to FROM messages WHERE kind = 'bounce'"),
                          message="the bounce in mailer's archive")
        assert stored[0]["rcpt_to"] == f'["{verp}"]'


# -- the systemd unit ---------------------------------------------------------------------


def unit_for_this_checkout(tmp_path: Path) -> Path:
    """examples/mailer.service with /opt/mailer (the guide's checkout) swapped for this one."""
    unit = tmp_path / "mailer.service"
    unit.write_text(UNIT.read_text().replace("/opt/mailer", str(REPO)))
    return unit


def test_systemd_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    done = subprocess.run([analyze, "verify", str(unit_for_this_checkout(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_systemd_unit_s_command_serves_and_stops_cleanly_on_sigterm(tmp_path):
    # Run the unit's ExecStart (venv and config swapped for this checkout's) and stop it
    # the way systemd does: SIGTERM, then a clean exit, so Restart=on-failure stays quiet.
    unit = dict(line.split("=", 1) for line in UNIT.read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    argv = unit["ExecStart"].split()
    assert argv[0] == "/opt/mailer/.venv/bin/mailer" and argv[1:3] == ["--config", "/etc/mailer/config.toml"]
    assert unit["KillSignal"] == "SIGTERM" and unit["Restart"] == "on-failure"
    port = free_port()
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[smtp]\nport = {port}\n[storage]\ndatabase = "mailer.db"\n'
                           '[delivery]\nmaildir = "maildir"\n[web]\nenabled = false\n'
                           '[digest]\nschedules = "schedules"\n[subscribers]\ntoken_key_file = "subscribers.key"\n')
    argv = [sys.executable, "-m", "mailer", "--config", str(config_file), *argv[3:]]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            with contextlib.suppress(OSError), smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
                return client.noop()[0] == 250
            return False

        wait_for(lambda: listening() or proc.poll() is not None, timeout=30, message="mailer serve listening")
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
