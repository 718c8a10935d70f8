"""Where a login's settings come from: the one way in, for every front end.

get_hosts, `snmplb pick` and `connect`, `snmplb status`, `snmplb feed` and the
chooser all read their LB_* settings here, alike:

- the environment (what LDM exports from lts.conf; empty variables are no value),
  or, with ``lts_conf`` (``--lts-conf FILE [--client ID]``), that lts.conf's
  sections for the client instead of the environment's LB_* variables;
- under either, the thin client's own file, /etc/snmplb/client.conf
  (``clientconf``; ``client_conf`` or $SNMPLB_CLIENT_CONF names another).

Every problem names its variable (or file and line) and never quotes a value
read from client.conf: any line there may hold a secret (a mistyped
passphrase line included). Bad values fall back to their documented defaults
(``settings.VARIABLES``).
"""

from __future__ import annotations

from snmplb.client.settings import ClientSettings, VARIABLES, from_env

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Mapping, Sequence


def environment(env: Mapping[str, str], lts_conf: str | None = None, clients: Sequence[str] = (),
                client_conf: str | None = None) -> tuple[dict[str, str], list[str]]:
    """The variables to decide with: ``env``, or with ``lts_conf`` (a path) that file's sections for
    ``clients`` in place of the environment's LB_* variables; ``client_conf`` names the client file.
    Raises OSError when ``lts_conf`` cannot be read (a usage error at the command line)."""
    from snmplb.client.clientconf import PATH_VARIABLE

    problems: list[str] = []
    if lts_conf is None:
        out = dict(env)
    else:
        from snmplb.client import ltsconf

        with open(lts_conf, encoding="utf-8", errors="replace") as f:
            values, found = ltsconf.resolve(f.read(), clients)
        problems += [f"{lts_conf}: {p}" for p in found]
        out = {k: v for k, v in env.items() if not k.startswith("LB_")} | values
    if client_conf is not None:
        out[PATH_VARIABLE] = str(client_conf)
    return out, problems


def load(env: Mapping[str, str], lts_conf: str | None = None, clients: Sequence[str] = (),
         client_conf: str | None = None) -> tuple[ClientSettings, list[str]]:
    """The login's settings and every problem found (``environment``'s sources: see the module).

    client.conf's values lie under the environment's (what LDM exports wins), and an empty variable
    is no value. Raises OSError only for an unreadable ``lts_conf``.
    """
    from snmplb.client.clientconf import read_client_conf

    variables, problems = environment(env, lts_conf, clients, client_conf)
    file_values, file_problems = read_client_conf(variables, frozenset(v.name for v in VARIABLES))
    given = {k: v for k, v in variables.items() if v.strip()}
    settings, more = from_env({**file_values, **given}, unquoted=frozenset(file_values) - frozenset(given))
    return settings, problems + file_problems + more


def configured_hosts(env: Mapping[str, str]) -> str:
    """The configured servers' hosts, in order, separated by spaces: get_hosts' last resort when the
    selection itself failed (LB_SERVERS from the environment, else from client.conf, else SERVER).
    Reads as little as it can: the one variable, no validation beyond the server list's own."""
    from snmplb.client.settings import parse_servers

    text = env.get("LB_SERVERS", "").strip()
    if not text:
        try:
            from snmplb.client.clientconf import read_client_conf

            text = read_client_conf(env, frozenset(("LB_SERVERS",)))[0].get("LB_SERVERS", "")
        except Exception:  # the last resort's own edge: the file is only a second source here
            text = ""
    servers, _ = parse_servers(text or env.get("SERVER", ""), 161)
    return " ".join(dict.fromkeys(s.host for s in servers))
