"""SNMPv3 users for snmpd, without a secret on any command line.

net-snmp's own ``net-snmp-create-v3-user`` takes the passphrases as
arguments, where every user of the machine sees them in ``ps``. Here they are
read from stdin (or a prompt) and written, with a ``createUser`` line, into a
file only root and snmpd read: snmpd's persistent file (it turns the line into
localized keys at its next start) or a test instance's config.
"""

from __future__ import annotations

import os
from pathlib import Path

from snmplb.errors import ConfigError

AUTH_PROTOCOLS = ("SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512", "MD5")
PRIV_PROTOCOLS = ("AES", "DES")
_FORBIDDEN = set('"\\\n\r\0')


def check_passphrase(label: str, secret: str) -> str:
    """Validate a passphrase (net-snmp needs 8 characters or more); the error never shows it."""
    if len(secret) < 8:
        raise ConfigError(f"{label}: a passphrase needs at least 8 characters")
    if _FORBIDDEN & set(secret):
        raise ConfigError(f"{label}: a passphrase may not contain quotes, backslashes or line breaks")
    return secret


def create_user_line(user: str, auth_pass: str, priv_pass: str,
                     auth_proto: str = "SHA", priv_proto: str = "AES") -> str:
    """snmpd's ``createUser`` line for an authPriv user."""
    if not user or not user.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"user: {user!r} must be letters, digits, '-' or '_'")
    if auth_proto not in AUTH_PROTOCOLS:
        raise ConfigError(f"auth protocol: {auth_proto!r} is not one of {', '.join(AUTH_PROTOCOLS)}")
    if priv_proto not in PRIV_PROTOCOLS:
        raise ConfigError(f"priv protocol: {priv_proto!r} is not one of {', '.join(PRIV_PROTOCOLS)}")
    check_passphrase("auth passphrase", auth_pass)
    check_passphrase("priv passphrase", priv_pass)
    return f'createUser {user} {auth_proto} "{auth_pass}" {priv_proto} "{priv_pass}"\n'


def append_secret_line(path: Path, line: str) -> bool:
    """Append ``line`` to ``path`` with mode 0600; True when an existing file had a looser mode.

    The mode is set before the secret is written: snmpd's persistent file may
    already exist world-readable, and the passphrases must never sit in it so.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        loose = os.fstat(fd).st_mode & 0o777 != 0o600
        if loose:
            os.fchmod(fd, 0o600)
        f.write(line)
    return loose
