"""The thin client's own settings file: LB_* variables kept out of lts.conf.

LTSP 5 serves lts.conf to the whole thin-client LAN over TFTP, so secrets
(the community, SNMPv3 passphrases) do not belong there. They go in a file
inside the image, readable by root only (default /etc/snmplb/client.conf,
``LB_NAME = value`` lines, ``#`` comments). The variables LDM exports (from
lts.conf) win over the file; the file wins over the defaults.

Read once per login, bounded (a regular file of at most 64 KiB, opened
without blocking), and never fatal: a problem is reported, naming the file
and the line, never quoting a value (any of them may be a secret). A line
that is not UTF-8 is skipped, the rest of the file is used. The reader is
snmplb's one key = value reader (kvfile, CLIENT_CONF dialect).
"""

from __future__ import annotations

import os
import stat
TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Mapping

from snmplb.kvfile import CLIENT_CONF, by_line, read_bytes

DEFAULT_PATH = "/etc/snmplb/client.conf"
PATH_VARIABLE = "SNMPLB_CLIENT_CONF"  # another file (tests; several images sharing one chroot)
_LIMIT = 64 * 1024


def read_client_conf(env: Mapping[str, str], known: frozenset[str]) -> tuple[dict[str, str], list[str]]:
    """The file's LB_* values (only names in ``known``) and the problems found; a missing file is
    silently empty."""
    path = env.get(PATH_VARIABLE) or DEFAULT_PATH
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}, []
    except PermissionError as exc:
        if os.geteuid() != 0 and PATH_VARIABLE not in env:
            # The default file is root's (its secrets are for get_hosts): a user's `snmplb pick` or
            # `ssh farm` through `snmplb connect` simply does without it, without a line at every login.
            return {}, []
        return {}, [f"{path}: {exc.strerror}; not used"]
    except OSError as exc:
        return {}, [f"{path}: {exc.strerror}; not used"]
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return {}, [f"{path}: not a regular file; not used"]
        if st.st_size > _LIMIT:
            return {}, [f"{path}: larger than {_LIMIT // 1024} KiB; not used"]
        raw = os.read(fd, _LIMIT + 1)
    except OSError as exc:
        return {}, [f"{path}: {exc.strerror}; not used"]
    finally:
        os.close(fd)
    problems = []
    if st.st_mode & 0o077:
        problems.append(f"{path}: readable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o}); "
                        "it may hold secrets: chmod 600 it")
    # The one key = value reader; its CLIENT_CONF dialect never quotes a line (any may hold a secret).
    entries, bad = read_bytes(raw, CLIENT_CONF)
    values: dict[str, str] = {}
    for e in entries:
        name = e.key[7:].strip() if e.key.startswith("EXPORT ") else e.key  # a file also sourced by a shell
        if name not in known:
            bad.append(f"line {e.number}: not a known LB_* name")
            continue
        values[name] = e.value
    problems += [f"{path}: {p}; skipped" for p in sorted(bad, key=by_line)]
    return values, problems
