"""``mailer dkim``: make a signing key, and show the DNS record that publishes it."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.context import Context, pass_context
from mailer.config import DNS_NAME, ConfigError
from mailer.outbound import dkim as dkim_keys

#: The selector when neither --selector nor [dkim] names one.
DEFAULT_SELECTOR = "mailer"


@click.group()
def dkim() -> None:
    """DKIM: the key that signs every outgoing message, and its DNS record."""


@dkim.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the private key (PEM, mode 0600).")
@click.option("--bits", type=click.Choice(["2048", "3072", "4096"]), default="2048", show_default=True,
              help="RSA key size; 2048 is what Gmail and Yahoo ask for and fits most DNS panels.")
@click.option("--selector", help=f"DKIM selector (default: dkim.selector, else {DEFAULT_SELECTOR!r}).")
@click.option("--domain", help="Signing domain (default: dkim.domain, else the domain of addresses.letters).")
@click.option("--force", is_flag=True, help="Replace an existing key file (its DNS record then stops matching).")
@pass_context
def keygen(context: Context, out: str, bits: str, selector: str | None, domain: str | None, force: bool) -> None:
    """Write a new private key and print the DNS TXT record to publish for it."""
    config = context.config
    selector = selector or (config.dkim.selector if config.dkim else DEFAULT_SELECTOR)
    domain = domain or (config.dkim.domain if config.dkim else config.addresses.letters.rpartition("@")[2])
    for option, value in (("--selector", selector), ("--domain", domain)):
        if not DNS_NAME.fullmatch(value):
            raise click.ClickException(f"{option}: {value!r} is not a DNS name (letters, digits, hyphens, dots)")
    path = Path(out)
    if path.exists() and not force:
        # Replacing a key that is in use breaks every signature until DNS has the new record.
        raise click.ClickException(f"{path} already exists; pass --force to replace it (then publish the new record)")
    key = dkim_keys.generate_key(int(bits))
    try:
        dkim_keys.write_private_key(path, key, force=force)
    except FileExistsError:
        raise click.ClickException(f"{path} already exists; pass --force to replace it") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    record = dkim_keys.dns_record(selector, domain, key.public_key())
    click.echo(f"Wrote a {bits}-bit RSA private key to {path} (mode 0600). Keep it secret; back it up.")
    click.echo("")
    _print_record(record)
    click.echo("")
    click.echo("Then sign with it (config file):")
    click.echo("  [dkim]")
    click.echo(f'  selector = "{selector}"')
    click.echo(f'  domain = "{domain}"')
    click.echo(f'  key_file = "{path.resolve()}"')


@dkim.command("dns")
@pass_context
def dns(context: Context) -> None:
    """Print the DNS TXT record for the configured key (check it after a deploy or a key change)."""
    config = context.config
    if config.dkim is None:
        where = config.source or "the built-in defaults"
        raise click.ClickException(f"no [dkim] section in {where}: mail goes out unsigned (see docs/dkim.md)")
    try:
        signer = dkim_keys.load_signer(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    _print_record(signer.dns_record())


def _print_record(record: dkim_keys.DnsRecord) -> None:
    click.echo("Publish this TXT record:")
    click.echo(f"  name:  {record.name}")
    click.echo(f"  value: {record.value}")
    click.echo("In a zone file (a DNS string holds 255 characters at most, so the value is split):")
    click.echo(f"  {record.zone_line()}")
