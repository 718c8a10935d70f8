"""The SNMPv3 (USM) protocols snmplb speaks: the one list every part takes them from.

The client's codec (client/snmpcodec) implements exactly these, so they are
what get_hosts accepts in LB_SNMP_AUTH_PROTOCOL / LB_SNMP_PRIV_PROTOCOL, what
``snmplb-admin create-v3-user`` creates users with (a user the thin clients
could not poll would be a trap), what ``check_snmplb -a / -x`` offer, and what
the lab's fleet creates. MD5 and DES are left out on purpose: both are broken
(RFC 3414's originals), and the codec does not speak them.

Names as net-snmp's ``createUser`` line and its tools spell them.
"""

from __future__ import annotations

from snmplb.errors import ConfigError

# Auth protocol -> (hashlib name, truncated HMAC length in bytes): RFC 3414 (HMAC-SHA-96), RFC 7860 (HMAC-SHA-2).
AUTH: dict[str, tuple[str, int]] = {
    "SHA": ("sha1", 12),
    "SHA-224": ("sha224", 16),
    "SHA-256": ("sha256", 24),
    "SHA-384": ("sha384", 32),
    "SHA-512": ("sha512", 48),
}
AUTH_PROTOCOLS: tuple[str, ...] = tuple(AUTH)
# Privacy: AES is AES-128-CFB (RFC 3826), net-snmp's "AES".
PRIV_PROTOCOLS: tuple[str, ...] = ("AES",)
DEFAULT_AUTH = "SHA"
DEFAULT_PRIV = "AES"


def check_auth(name: str) -> str:
    """The auth protocol ``name`` (any case) as spelled here; ConfigError naming the accepted ones
    when snmplb does not speak it."""
    return _known("auth protocol", name, AUTH_PROTOCOLS)


def check_priv(name: str) -> str:
    """The privacy protocol ``name`` (any case) as spelled here; ConfigError naming the accepted ones
    when snmplb does not speak it."""
    return _known("priv protocol", name, PRIV_PROTOCOLS)


def _known(what: str, name: str, options: tuple[str, ...]) -> str:
    folded = name.strip().upper()
    if folded not in options:
        raise ConfigError(f"{what}: {name[:40]!r} is not one get_hosts can poll with (one of {', '.join(options)})")
    return folded
