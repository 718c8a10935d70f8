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
USER_MAX = 32  # USM user names are 1..32 octets (RFC 3414); get_hosts' LB_SNMP_USER takes as many
PASSPHRASE_MIN, PASSPHRASE_MAX = 8, 1024  # net-snmp refuses shorter; get_hosts refuses longer
_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def passphrase_problem(secret: str) -> str:
    """Why get_hosts cannot use ``secret`` as a passphrase ("" when it can). Says nothing of the
    secret itself: not a character, a position or a length."""
    if any(ord(c) < 32 or ord(c) == 127 for c in secret):
        return "a passphrase must be text without control characters (the file's encoding?)"
    if len(secret) < PASSPHRASE_MIN:
        return f"a passphrase needs at least {PASSPHRASE_MIN} characters"
    if len(secret) > PASSPHRASE_MAX:
        return f"a passphrase may have at most {PASSPHRASE_MAX} characters"
    return ""


def check_user(user: str) -> str:
    """A user name snmpd's createUser line takes and get_hosts' LB_SNMP_USER accepts as it is."""
    if not 1 <= len(user) <= USER_MAX or not set(user) <= _USER_CHARS:
        raise ConfigError(f"user: {user[:40]!r} must be 1 to {USER_MAX} ASCII letters, digits, '-' or '_'")
    return user


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
