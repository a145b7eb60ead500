"""The column is no weapon: forged senders get no acknowledgement, none carries a payload, and there is a cap.

Letters go over real SMTP on loopback to a running service; SPF is looked up
in a DNS server started here on loopback (dnspython's own wire format over a
UDP socket), so nothing leaves the machine. The service is told not to skip
loopback peers (``spf.skip_addresses = ""``), so 127.0.0.1 is the client
address SPF judges.
"""

from __future__ import annotations

import email
import json
import socket
import threading
from email import policy
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mailer import desk
from mailer.app.background import BackgroundService
from mailer.store.db import open_database

from conftest import handled, import_example_topics, letter, make_config, rows, send, wait_for

SPF_RECORDS = {
    "forged.example": "v=spf1 ip4:192.0.2.1 -all",     # only 192.0.2.1 may send: loopback is a forgery
    "honest.example": "v=spf1 ip4:127.0.0.0/8 -all",   # loopback may send
    "soft.example": "v=spf1 ip4:192.0.2.1 ~all",
}


class DnsStub:
    """A DNS server on loopback answering TXT questions from ``records``; NXDOMAIN for other names."""

    def __init__(self, records: dict[str, str], *, answer: bool = True) -> None:
        self.records = records
        self.answer = answer
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.queries.append((name, dns.rdatatype.to_text(question.rdtype)))
            if not self.answer:
                continue  # a resolver that never answers
            response = dns.message.make_response(query)
            if name not in self.records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "TXT",
                                                           f'"{self.records[name]}"'))
            self.sock.sendto(response.to_wire(), client)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def dns_stub():
    stub = DnsStub(SPF_RECORDS)
    yield stub
    stub.stop()


def spf_config(tmp_path, stub, **sections):
    spf = {"nameservers": f"127.0.0.1:{stub.port}", "skip_addresses": "", "dns_timeout": 2.0}
    spf.update(sections.pop("spf", {}))
    config = make_config(tmp_path, spf=spf, **sections)
    import_example_topics(config)
    return config


def acknowledgements(config) -> list[dict]:
    return rows(config.storage.database,
                "SELECT * FROM messages WHERE kind = 'acknowledgement' AND direction = 'outbound' ORDER BY id")


def write(running, sender: str, message_id: str, subject: str = "A question about my sister",
          name: str = "A Reader") -> None:
    raw = letter(subject, "We have not spoken for a year.\r\n", sender=f"{name} <{sender}>", message_id=message_id)
    assert send(running.smtp_port, raw, mail_from=sender)[0] == 250


# -- SPF ---------------------------------------------------------------------------------------

def test_a_forged_envelope_sender_gets_no_acknowledgement_but_the_letter_is_kept(tmp_path, dns_stub):
    config = spf_config(tmp_path, dns_stub)
    with BackgroundService(config) as running:
        write(running, "victim@forged.example", "<forged@forged.example>")
        write(running, "reader@honest.example", "<honest@honest.example>")
        forged = handled(config, "<forged@forged.example>")
        honest = handled(config, "<honest@honest.example>")
    assert forged["disposition"].startswith("not answered: SPF fail")
    assert "kept for the columnist" in forged["disposition"]
    assert honest["disposition"].startswith("acknowledged")
    assert [json.loads(a["rcpt_to"]) for a in acknowledgements(config)] == [["reader@honest.example"]]
    assert ("forged.example", "TXT") in dns_stub.queries
    db = open_database(config.storage.database)
    try:
        assert {t["correspondent"] for t in desk.inbox(db)} == {"reader@honest.example", "victim@forged.example"}
    finally:
        db.close()


def test_softfail_and_no_record_are_still_acknowledged(tmp_path, dns_stub):
    config = spf_config(tmp_path, dns_stub)
    with BackgroundService(config) as running:
        write(running, "reader@soft.example", "<soft@soft.example>")
        write(running, "reader@norecord.example", "<none@norecord.example>")
        soft = handled(config, "<soft@soft.example>")
        none = handled(config, "<none@norecord.example>")
    assert soft["disposition"].startswith("acknowledged")
    assert none["disposition"].startswith("acknowledged")
    assert json.loads(soft["meta"])["spf"]["result"] == "softfail"
    assert json.loads(none["meta"])["spf"]["result"] == "none"


def test_a_front_mta_that_checked_already_means_no_lookups(tmp_path, dns_stub):
    config = spf_config(tmp_path, dns_stub, smtp={"trusted_relay": True})
    with BackgroundService(config) as running:
        write(running, "victim@forged.example", "<relayed@forged.example>")
        relayed = handled(config, "<relayed@forged.example>")
    assert relayed["disposition"].startswith("acknowledged")
    assert "spf" not in json.loads(relayed["meta"])
    assert dns_stub.queries == []


def test_answers_are_cached_for_their_ttl_and_a_silent_resolver_times_out(dns_stub):
    from mailer.config import SpfConfig
    from mailer.inbound.spf import SpfChecker

    now = [0.0]
    checker = SpfChecker(SpfConfig(nameservers=f"127.0.0.1:{dns_stub.port}", skip_addresses="",
                                   cache_seconds=600.0), clock=lambda: now[0])
    assert checker.check("127.0.0.1:4321", "a@honest.example", "mx.honest.example").result == "pass"
    assert checker.check("127.0.0.1:4321", "b@honest.example", "mx.honest.example").result == "pass"
    assert dns_stub.queries.count(("honest.example", "TXT")) == 1
    now[0] += 301  # the record's TTL is 300 s
    checker.check("127.0.0.1:4321", "c@honest.example", "mx.honest.example")
    assert dns_stub.queries.count(("honest.example", "TXT")) == 2

    silent = DnsStub({}, answer=False)
    try:
        slow = SpfChecker(SpfConfig(nameservers=f"127.0.0.1:{silent.port}", skip_addresses="",
                                    dns_timeout=0.3, time_limit=1.0))
        verdict = slow.check("127.0.0.1:4321", "a@honest.example", "mx.honest.example")
    finally:
        silent.stop()
    assert verdict.result == "temperror"
    assert silent.queries, "it asked the silent resolver"


def test_loopback_peers_are_skipped_by_default(dns_stub):
    from mailer.config import SpfConfig
    from mailer.inbound.spf import SpfChecker

    checker = SpfChecker(SpfConfig(nameservers=f"127.0.0.1:{dns_stub.port}"))
    assert checker.check("127.0.0.1:4321", "victim@forged.example", "x").result == "skipped"
    assert dns_stub.queries == []


# -- what an acknowledgement repeats, and how many there are -------------------------------------

def test_the_acknowledgement_quotes_only_a_little_of_the_subject_and_name(tmp_path):
    config = make_config(tmp_path)
    import_example_topics(config)
    spam = "Cheap pills at https://spam.example/buy now! " * 450   # about 20 KB
    with BackgroundService(config) as running:
        # Folded (RFC 5322 2.2.3), as a sending program would fold a long header.
        write(running, "victim@example.org", "<spam@example.org>", subject=spam.strip().replace("! ", "!\r\n "),
              name=("Visit https://spam.example/buy " * 20).strip())
        wait_for(lambda: list((Path(config.delivery.maildir) / "new").glob("*")), message="the acknowledgement")
    [path] = list((Path(config.delivery.maildir) / "new").glob("*"))
    raw = path.read_bytes()
    ack = email.message_from_bytes(raw, policy=policy.default)
    assert raw.count(b"spam.example") <= 6, "subject and name, each once at most in text, HTML and headers"
    text = ack.get_body(("plain",)).get_content()
    assert text.count("spam.example") <= 2
    assert "…" in text
    assert len(ack["Subject"]) < 120


def test_an_hourly_cap_keeps_the_overflow_for_the_columnist(tmp_path):
    config = make_config(tmp_path, acknowledgements={"max_per_hour": 2})
    import_example_topics(config)
    with BackgroundService(config) as running:
        for n in range(3):
            write(running, f"reader{n}@example.org", f"<capped-{n}@example.org>")
        dispositions = [handled(config, f"<capped-{n}@example.org>")["disposition"] for n in range(3)]
    assert [d.startswith("acknowledged") for d in dispositions] == [True, True, False]
    assert "cap of 2 acknowledgements an hour" in dispositions[2] and "kept for the columnist" in dispositions[2]
    assert len(acknowledgements(config)) == 2
    db = open_database(config.storage.database)
    try:
        assert "reader2@example.org" in {t["correspondent"] for t in desk.inbox(db)}
    finally:
        db.close()


@pytest.mark.parametrize("key, value", [("max_per_hour", -1)], ids=["negative-cap"])
def test_a_negative_cap_is_refused_naming_the_key(tmp_path, key, value):
    from mailer.config import ConfigError

    with pytest.raises(ConfigError, match=f"acknowledgements.{key}"):
        make_config(tmp_path, acknowledgements={key: value})


@pytest.mark.parametrize("key, value, words", [
    ("dns_timeout", 0.0, "spf.dns_timeout"),
    ("nameservers", "resolver.example", "spf.nameservers"),
    ("skip_addresses", "not-a-network", "spf.skip_addresses"),
], ids=["zero-timeout", "nameserver-not-an-address", "bad-skip-network"])
def test_bad_spf_settings_are_refused_naming_the_key(tmp_path, key, value, words):
    from mailer.config import ConfigError

    with pytest.raises(ConfigError, match=words):
        make_config(tmp_path, spf={key: value})
