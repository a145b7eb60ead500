"""SPF for the envelope sender of a letter: may the client that handed it over send for that domain?

The acknowledgement goes to the envelope sender (RFC 3834), which the client
chooses. Without a check, anyone can make the column mail anyone, with the
column's DKIM signature on it. pyspf (the reference implementation of RFC
7208, which Postfix's policyd-spf runs) evaluates the record; dnspython asks
the DNS, with a timeout per lookup, a limit on the whole check, the
nameservers from ``[spf]`` (tests point them at a stub on loopback), and a
cache of answers kept for their TTL (at most ``spf.cache_seconds``).

The check runs in the pipeline, after the 250 and before the acknowledgement
is decided (see :class:`mailer.inbound.pipeline.Pipeline`): a slow DNS must
never hold a letter's 250 or the archive's one writer thread.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass

import dns.exception
import dns.resolver
import spf

from mailer.config import SpfConfig

#: Answers with no data (NXDOMAIN, no record of that type) are kept this long at most.
NEGATIVE_TTL = 300.0

# pyspf looks its DNS function up as a module global on every lookup; it is
# pointed once at a function that asks the checker running on this thread.
_running = threading.local()


@dataclass(frozen=True)
class SpfVerdict:
    """An SPF result ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "skipped")."""

    result: str
    explanation: str = ""

    def as_meta(self) -> dict:
        """How the verdict is kept in the message's meta."""
        return {"result": self.result, "explanation": self.explanation[:200]}


class SpfChecker:
    """Checks (client address, envelope sender, HELO) with pyspf over our own resolver and cache."""

    def __init__(self, config: SpfConfig, *, clock=time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.resolver = _resolver(config)
        self.skip = [ipaddress.ip_network(p.strip(), strict=False)
                     for p in config.skip_addresses.split(",") if p.strip()]
        self._cache: dict[tuple[str, str], tuple[float, list]] = {}
        self._lock = threading.Lock()
        spf.DNSLookup = _lookup_on_running_checker

    def check(self, peer: str, mail_from: str, helo: str) -> SpfVerdict:
        """The SPF verdict for a letter from ``peer`` ("ip:port") with envelope sender ``mail_from``."""
        ip = _peer_ip(peer)
        if ip is None:
            return SpfVerdict("skipped", "no client address")
        if any(ip in network for network in self.skip):
            return SpfVerdict("skipped", f"{ip} is in spf.skip_addresses")
        # A null reverse path is checked as postmaster@HELO (RFC 7208 2.4).
        sender = mail_from or (f"postmaster@{helo}" if helo else "")
        if not sender:
            return SpfVerdict("none", "null reverse path and no HELO name")
        _running.checker = self
        try:
            result, explanation = spf.check2(
                i=str(ip), s=sender, h=helo or "unknown", timeout=self.config.dns_timeout,
                querytime=self.config.time_limit,
            )
        except Exception as exc:  # noqa: BLE001 - a broken record or library must not stop the pipeline
            result, explanation = "temperror", f"{type(exc).__name__}: {exc}"
        finally:
            _running.checker = None
        return SpfVerdict(result, explanation)

    def lookup(self, name: str, qtype: str, timeout: float) -> list:
        """Records for (name, qtype) in pyspf's form, from the cache or the resolver."""
        key = (name.lower().rstrip("."), qtype)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached and cached[0] > now:
                return cached[1]
        records, ttl = self._ask(name, qtype, timeout)
        with self._lock:
            self._cache[key] = (now + min(ttl, self.config.cache_seconds), records)
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        return records

    def _ask(self, name: str, qtype: str, timeout: float) -> tuple[list, float]:
        try:
            answer = self.resolver.resolve(name, qtype, lifetime=min(timeout, self.config.dns_timeout),
                                           search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return [], NEGATIVE_TTL
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise spf.TempError(f"DNS {exc}") from None
        if answer.rrset is None:
            return [], NEGATIVE_TTL
        records = []
        for rdata in answer.rrset:
            if qtype in ("A", "AAAA"):
                records.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                records.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                records.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                records.append(((name, qtype), rdata.strings))
        return records, float(answer.rrset.ttl)


def _lookup_on_running_checker(name, qtype, strict=True, timeout=30):
    checker = getattr(_running, "checker", None)
    if checker is None:
        raise spf.TempError("DNS: no SPF checker is running on this thread")
    return checker.lookup(name, qtype, timeout)


def _resolver(config: SpfConfig) -> dns.resolver.Resolver:
    servers = [p.strip() for p in config.nameservers.split(",") if p.strip()]
    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:
        resolver.nameservers = [s.partition(":")[0] if s.count(":") == 1 else s for s in servers]
        ports = {s.partition(":")[2] for s in servers if s.count(":") == 1}
        if ports:
            resolver.port = int(ports.pop())
    resolver.timeout = config.dns_timeout
    resolver.lifetime = config.dns_timeout
    return resolver


def _peer_ip(peer: str):
    host = (peer or "").rpartition(":")[0] if ":" in (peer or "") else (peer or "")
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
