"""SNMPv3 users for snmpd, without a secret on any command line.

net-snmp's own ``net-snmp-create-v3-user`` takes the passphrases as
arguments, where every user of the machine sees them in ``ps``. Here they are
read from stdin (or a prompt) and written, with a ``createUser`` line, into a
file only root and snmpd read: snmpd's persistent file (it turns the line into
localized keys at its next start) or a test instance's config.

Only the protocols snmplb speaks (snmplb.usm) are offered: net-snmp would
also create an MD5 or DES user, which no thin client could then poll.
"""

from __future__ import annotations

import os
from pathlib import Path

from snmplb import usm
from snmplb.errors import ConfigError
_FORBIDDEN = set('"\\\n\r\0')


def check_passphrase(label: str, secret: str) -> str:
    """A passphrase get_hosts can use (snmplb.usm's rule) that snmpd's createUser line can hold, and
    that every key = value reader gives back unchanged (they strip the value); the error never shows it."""
    problem = usm.passphrase_problem(secret)
    if problem:
        raise ConfigError(f"{label}: {problem}")
    if _FORBIDDEN & set(secret):
        raise ConfigError(f"{label}: a passphrase may not contain quotes, backslashes or line breaks")
    if secret != secret.strip():
        raise ConfigError(f"{label}: a passphrase may not start or end with a space (the readers strip it)")
    return secret


def create_user_line(user: str, auth_pass: str, priv_pass: str,
                     auth_proto: str = usm.DEFAULT_AUTH, priv_proto: str = usm.DEFAULT_PRIV) -> str:
    """snmpd's ``createUser`` line for an authPriv user get_hosts can poll."""
    usm.check_user(user)
    auth_proto = usm.check_auth(auth_proto)
    priv_proto = usm.check_priv(priv_proto)
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
