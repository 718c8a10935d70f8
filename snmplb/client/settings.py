"""get_hosts' settings: the LB_* variables of lts.conf, as LDM exports them.

One table, VARIABLES, names every variable, its default, how it is checked
and what it means; parsing and the README's table both come from it. A bad
value never stops a login: it is reported (the message names the variable)
and the documented default is used.
"""

from __future__ import annotations

from snmplb.errors import ConfigError
# The one validation of key = value settings (kvfile); the short names keep the VARIABLES table readable.
from snmplb.kvfile import number as _float, one_of as _choice, shown, validate, whole as _int, yes_no as _bool
from snmplb.usm import AUTH_PROTOCOLS, PRIV_PROTOCOLS, USER_MAX, passphrase_problem  # the one list and rules
from snmplb import mib
from snmplb.record import record

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Callable, Mapping

ALGORITHMS = ("thresholded", "random", "best", "weighted", "fixed", "sticky", "lbserver", "balanced")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_HOST_CHARS = _ALNUM | frozenset("._-")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_URL_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))
_SECRETS = ("community", "auth_passphrase", "priv_passphrase")


def _is_utf8(raw: str) -> bool:
    """False for text that came from bytes that are not UTF-8 (os.environ keeps them as surrogates)."""
    try:
        raw.encode()
    except UnicodeEncodeError:
        return False
    return True


def is_host(text: str) -> bool:
    """A DNS name or IPv4 literal (letters, digits, '.', '-', '_'), or an IPv6 literal."""
    if ":" in text:
        if not (2 <= len(text) <= 45 and set(text) <= _IPV6_CHARS):
            return False
        import _socket  # the C module: cheap, and only for IPv6 entries

        try:  # "1.2.3.4:5:6" has only IPv6 characters but is no address
            _socket.inet_pton(_socket.AF_INET6, text)
        except OSError:
            return False
        return True
    return 0 < len(text) <= 253 and text[0] in _ALNUM and set(text) <= _HOST_CHARS


class Server(record("Server", "host port", defaults=(161,))):
    """A configured application server: host (str, as written; printed for LDM) and its SNMP port (int)."""

    __slots__ = ()


def _passphrase(raw: str) -> str:
    # Never echo the secret, nor any part, position or length of it.
    if not _is_utf8(raw):
        raise ConfigError("a passphrase must be UTF-8 text without control characters (the file's encoding?)")
    problem = passphrase_problem(raw)  # the same rule snmplb-admin create-v3-user applies (snmplb.usm)
    if problem:
        raise ConfigError(problem)
    return raw


def _text(limit: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        # Never quotes the value: this parser also checks the community, a secret.
        if not _is_utf8(raw):
            raise ConfigError("is not UTF-8 text (was the file saved in another encoding?)")
        if len(raw) > limit or any(ord(c) < 32 or ord(c) == 127 for c in raw):
            raise ConfigError(f"must be printable text of at most {limit} characters")
        return raw
    return parse


def _url(raw: str) -> str:
    netloc = raw[7:].split("/", 1)[0]
    if not raw.startswith("http://") or not netloc or len(raw) > 2048 or not set(raw) <= _URL_CHARS:
        raise ConfigError(f"{shown(raw)} is not an http:// URL")
    try:  # host, and a port that exists: what the lbserver client will connect to
        parse_server(netloc, 8008)
    except ConfigError:
        raise ConfigError(f"{shown(raw)} is not an http://host[:port]/ URL with a port in 1..65535") from None
    return raw


def parse_server(entry: str, default_port: int) -> Server:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    host, port = entry, default_port
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            raise ConfigError(f"{shown(entry)}: missing ']'")
        host, rest = entry[1:close], entry[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{shown(entry)}: expected ':port' after ']'")
            port = _int(1, 65535)(rest[1:])
    elif entry.count(":") == 1:
        host, p = entry.split(":")
        port = _int(1, 65535)(p)
    if not is_host(host):
        raise ConfigError(f"{shown(entry)} is not a host name or address")
    return Server(host, port)


def _key_path(raw: str) -> str:
    """LB_AFFINITY_KEY_FILE: an absolute path (what it holds is checked when it is read: affinity.read_key)."""
    if not raw.startswith("/"):
        raise ConfigError(f"{shown(raw)} is not an absolute path")
    return raw


class Variable(record("Variable", "name attr parse value doc if_bad shown", defaults=(None, None))):
    """One lts.conf variable: name, the ClientSettings field (attr), its parser (None: special), its
    default value (value: ClientSettings' default, written only here), its meaning (doc), what a bad
    value means (if_bad): None for the default, or (the value taken instead, what the message says
    is done), and the default's words where the value alone does not say it (shown). A kvfile.Field
    with a doc: kvfile.validate checks these as it checks agent.conf's and admin.conf's fields."""

    __slots__ = ()

    @property
    def default(self) -> str:
        """The default as documented (README, the man page, "using the default (...)")."""
        if self.shown is not None:
            return str(self.shown)
        if isinstance(self.value, bool):
            return "yes" if self.value else "no"
        return str(self.value)


VARIABLES: tuple[Variable, ...] = (
    Variable("LB_SERVERS", "servers", None, (),
             "Application servers, separated by spaces: `host` or `host:port` (SNMP port), `[v6addr]:port`.",
             shown="$SERVER"),
    Variable("LB_ALGORITHM", "algorithm", _choice(ALGORITHMS), "balanced",
             "How to choose: " + ", ".join(f"`{a}`" for a in ALGORITHMS) + " (docs/algorithms.md)."),
    Variable("LB_TIMEOUT_MS", "timeout_ms", _int(50, 30000), 1000,
             "The login's one deadline, in ms, counted from get_hosts' start (the interpreter's start-up "
             "included): no server delays a login longer."),
    Variable("LB_MAX_LOAD", "max_load", _float(0.01, 1000), 2.0,
             "`thresholded`, `balanced`: skip servers whose 1-minute load per CPU is above this. Below it, "
             "`balanced` counts the load a server's sessions do not explain as capacity in use: at 1.0 per CPU "
             "(where the agent says busy) such a server keeps 5 % of its capacity (docs/algorithms.md)."),
    Variable("LB_MAX_RESPONSE_MS", "max_response_ms", _int(1, 30000), 500,
             "`thresholded`: skip servers that answered slower than this (ms); `balanced`: skip them while the "
             "servers that answered in time hold at least 80 % of the safe capacity (a slow desktop holding a "
             "third of a small lab still takes its share: docs/algorithms.md)."),
    Variable("LB_SKIP_SWAPPING", "skip_swapping", _bool, True,
             "`thresholded`, `balanced`: skip servers that are swapping."),
    Variable("LB_SNMP_VERSION", "snmp_version", _choice(("2c", "3")), "2c",
             "`2c` or `3` (authPriv). With `3` and a passphrase missing or bad, or any other value, nothing is "
             "polled (no fallback to SNMPv2c in clear): the configured list is printed.",
             # "v3" meant SNMPv3: a bad version is no version (settings.refusal), never the default 2c
             ("", "not polling (no fallback to SNMPv2c in clear)")),
    Variable("LB_SNMP_COMMUNITY", "community", _text(64), "snmplb-ltsp", "SNMPv2c community."),
    Variable("LB_SNMP_USER", "user", _text(USER_MAX), "snmplb", "SNMPv3 user name."),
    Variable("LB_SNMP_AUTH_PROTOCOL", "auth_protocol", _choice(AUTH_PROTOCOLS, str.upper), "SHA",
             "SNMPv3 authentication: " + ", ".join(AUTH_PROTOCOLS) + "."),
    Variable("LB_SNMP_AUTH_PASSPHRASE", "auth_passphrase", _passphrase, "",
             "SNMPv3 authentication passphrase (8 characters or more). Never logged.", shown="(none)"),
    Variable("LB_SNMP_PRIV_PROTOCOL", "priv_protocol", _choice(PRIV_PROTOCOLS, str.upper), "AES",
             "SNMPv3 privacy: AES (AES-128-CFB)."),
    Variable("LB_SNMP_PRIV_PASSPHRASE", "priv_passphrase", _passphrase, "",
             "SNMPv3 privacy passphrase (8 characters or more). Never logged.", shown="(none)"),
    Variable("LB_LBSERVER_URL", "lbserver_url", _url, "",
             "`lbserver`: ltsp-cluster's lbserver, e.g. `http://server:8008/`.", shown="(none)"),
    Variable("LB_CLIENT_ID", "client_id", _text(64), "",
             "`sticky`: this client's identity.", shown="MAC of the default route's interface"),
    Variable("LB_SNMP_PORT", "snmp_port", _int(1, 65535), 161, "SNMP port of servers listed without one."),
    Variable("LB_RETRIES", "retries", _int(0, 10), 3,
             "Retransmissions per request, spread within LB_TIMEOUT_MS (a lost datagram is not a dead server)."),
    Variable("LB_MAX_HOSTS", "max_hosts", _int(0, 1000), 0,
             "Print at most this many hosts (0: all eligible ones)."),
    Variable("LB_SLOW_START_S", "slow_start_s", _int(0, 86400), 300,
             "`balanced`: a server that came into service less than this many seconds ago (lbInService) gets "
             "a share growing linearly over the window (0: no slow start)."),
    Variable("LB_SAMPLE", "sample", _int(0, 1000), 0,
             "Poll only this many servers, drawn at random in proportion to their LB_SAMPLE_WEIGHTS (0: all); "
             "the rest is polled too (hedge) when none of them has a usable answer within 50 ms (or 4 round "
             "trips of the fastest answer). A login then costs O(1) SNMP requests however large the fleet; once "
             "one sampled server answered, a silent one is waited for at most 50 ms (or 4 of that answer's "
             "round trips). With servers of different sizes, set LB_SAMPLE_WEIGHTS (docs/sampling.md)."),
    Variable("LB_SAMPLE_WEIGHTS", "sample_weights", None, (),
             "`LB_SAMPLE`: each server's capacity, the lbWeight set on it (`snmplb-admin weight`), as "
             "`host=weight` entries separated by spaces (`host:port=weight` for one of several SNMP ports, "
             "`[v6addr]=weight`); a server not listed counts as 100, one at 0 is only polled with the hedge. "
             "The sample is drawn in proportion: a server at 200 is twice as likely to be polled as one at 100. "
             "A weight that disagrees with the polled lbWeight is reported, by get_hosts once and again only "
             "when the finding changes (LB_SERVERS, LB_SAMPLE_WEIGHTS or a polled server's lbWeight): it keeps "
             "digests of it in /run/snmplb/get_hosts-drift (root's own, 0600); where that file cannot be kept "
             "safely, at every login.", shown="(every server 100)"),
    Variable("LB_AFFINITY", "affinity", _bool, True,
             "Where the user is known (`snmplb pick --user`, `snmplb connect --user`, the RDP and X2Go session "
             "wrappers, the PAM hook; not get_hosts: LDM asks before anyone typed a name) and a site key is set "
             "(LB_AFFINITY_KEY_FILE): a user with a session on a server that can take a reconnect (enabled or "
             "draining, not disabled, down or unavailable) goes back there, to one with a session waiting for "
             "a reconnect first; otherwise the algorithm decides. Every server of the user's pool is then "
             "polled (LB_SAMPLE does not apply)."),
    Variable("LB_AFFINITY_KEY_FILE", "affinity_key_file", _key_path, "",
             "The site key that the question about a user's sessions is hashed with (the agents' "
             "`affinity_key_file` holds the same): no user name crosses the network. Owned by root (or the "
             "user running the client), writable by nobody else. Empty: no key, no affinity.", shown="(none)"),
    Variable("LB_POOLS", "pools", None, (),
             "Server pools by group, where the user is known: `group: host host ...` entries separated by "
             "`;`, each host one of LB_SERVERS (as written there). A user in one or more of the groups (as NSS "
             "sees them on this client) gets their pools' servers; a user in none gets the `*` entry's, else "
             "the servers in no pool. A session in another pool is not followed (the pools are the admin's "
             "boundary): get_hosts, which knows no user, keeps LB_SERVERS.", shown="(none)"),
    Variable("LB_SEED", "seed", _int(0, 2**63), None, "Seed of the random choices, for tests only.", shown="(random)"),
)


_FIELDS = ("servers algorithm timeout_ms max_load max_response_ms skip_swapping snmp_version community user "
           "auth_protocol auth_passphrase priv_protocol priv_passphrase lbserver_url client_id snmp_port "
           "retries max_hosts seed slow_start_s sample sample_weights affinity affinity_key_file pools")
_VALUE = {v.attr: v.value for v in VARIABLES}


# The fields are written in the call as well: mypy reads a record's fields from literals only, and then
# knows them by name (test_settings checks that they are _FIELDS). Their defaults stay VARIABLES' values.
class ClientSettings(record("ClientSettings",
                            "servers algorithm timeout_ms max_load max_response_ms skip_swapping snmp_version "
                            "community user auth_protocol auth_passphrase priv_protocol priv_passphrase "
                            "lbserver_url client_id snmp_port retries max_hosts seed slow_start_s sample "
                            "sample_weights affinity affinity_key_file pools",
                            defaults=tuple(_VALUE[f] for f in _FIELDS.split()))):  # type: ignore[misc]  # not a literal
    """Everything get_hosts and the status view need; VARIABLES documents each field and holds its default.

    A record (snmplb.record), not a dataclass: get_hosts imports this at every login on a
    thin client, and dataclasses cost ~10 ms of imports (docs/benchmarks.md).
    """

    __slots__ = ()

    def __repr__(self) -> str:  # secrets never reach a log or a traceback
        shown = ", ".join(f"{k}={'***' if k in _SECRETS and v else v!r}" for k, v in zip(self._fields, self))
        return f"ClientSettings({shown})"


def from_env(env: Mapping[str, str], unquoted: frozenset[str] = frozenset()) -> tuple[ClientSettings, list[str]]:
    """Settings from an environment (or a resolved lts.conf), and one problem per bad value; the values
    of the keys in ``unquoted`` (read from client.conf) are never quoted in a problem."""
    given = {v.name: env.get(v.name, "").strip() for v in VARIABLES}  # an empty value means the default
    changes, problems = validate(VARIABLES, {k: v for k, v in given.items() if v}, unknown=False,
                                 unquoted=unquoted)
    settings = ClientSettings()._replace(**changes)  # type: ignore[call-arg]  # every field has a default
    servers, more = parse_servers(env.get("LB_SERVERS", "").strip() or env.get("SERVER", "").strip(),
                                  settings.snmp_port)
    problems += _unquoted(more, "LB_SERVERS", unquoted)
    weights, more = parse_sample_weights(env.get("LB_SAMPLE_WEIGHTS", "").strip(), servers)
    problems += _unquoted(more, "LB_SAMPLE_WEIGHTS", unquoted)
    pools, more = parse_pools(env.get("LB_POOLS", "").strip(), servers)
    problems += _unquoted(more, "LB_POOLS", unquoted)
    settings = settings._replace(servers=servers, sample_weights=weights, pools=pools)
    refused = refusal(settings)
    if refused and settings.snmp_version in ("2c", "3"):  # a bad version was reported with its value above
        problems.append(refused)
    if settings.algorithm == "lbserver" and not settings.lbserver_url:
        problems.append("LB_ALGORITHM: lbserver needs LB_LBSERVER_URL; it falls back to thresholded")
    if not servers:
        problems.append("LB_SERVERS: no server configured and SERVER is empty")
    return settings, problems


Pools = tuple[tuple[str, tuple[Server, ...]], ...]  # LB_POOLS: (group, its servers in LB_SERVERS' order)
DEFAULT_POOL = "*"


def parse_pools(text: str, servers: tuple[Server, ...]) -> tuple[Pools, list[str]]:
    """LB_POOLS: ``group: host host; group: ...`` as (group, servers) pairs. A host is matched to
    ``servers`` as written there (``host`` for every SNMP port of it, ``host:port`` for one); an entry
    naming no server of LB_SERVERS, a bad group name or a group given twice is reported and skipped."""
    pools: list[tuple[str, tuple[Server, ...]]] = []
    problems: list[str] = []
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        group, colon, hosts = entry.partition(":")
        group = group.strip()
        if not colon or not group or not (group == DEFAULT_POOL or _is_group(group)):
            problems.append(f"LB_POOLS: {shown(entry)} is not 'group: host host ...'; skipped")
            continue
        if any(g == group for g, _ in pools):
            problems.append(f"LB_POOLS: group {shown(group)} given twice; the first entry stands")
            continue
        members: list[Server] = []
        for host in hosts.replace(",", " ").split():
            try:
                wanted = parse_server(host, 0)
            except ConfigError as exc:
                problems.append(f"LB_POOLS: {group}: {exc}; skipped")
                continue
            found = [s for s in servers if s.host == wanted.host and wanted.port in (0, s.port)]
            if not found:
                problems.append(f"LB_POOLS: {group}: {shown(host)} is not in LB_SERVERS; skipped")
            members += [s for s in found if s not in members]
        if not members:
            problems.append(f"LB_POOLS: group {shown(group)} has no server of LB_SERVERS; skipped")
            continue
        order = {s: i for i, s in enumerate(servers)}
        pools.append((group, tuple(sorted(members, key=order.__getitem__))))
    return tuple(pools), problems[:_MAX_ENTRY_PROBLEMS * 2]


def _is_group(name: str) -> bool:
    """A group name as NSS may hold one: no ':' (/etc/group's separator), ';', space or control character."""
    return len(name) <= 256 and all(c.isprintable() and c not in ":; \t" for c in name)


def pool_of(settings: ClientSettings, groups: tuple[str, ...]) -> tuple[tuple[Server, ...], str]:
    """The servers of a user in ``groups`` (LB_POOLS; LB_SERVERS without pools), and the pools' names
    ("" without pools): their pools' servers, in LB_SERVERS' order; for a user in no pool, the ``*``
    entry's, else the servers in no pool (which may be none)."""
    pools: Pools = settings.pools
    servers: tuple[Server, ...] = settings.servers
    if not pools:
        return servers, ""
    mine = [(g, members) for g, members in pools if g != DEFAULT_POOL and g in groups]
    if not mine:
        default = [members for g, members in pools if g == DEFAULT_POOL]
        pooled = {s for _, members in pools for s in members}
        if default:
            return default[0], DEFAULT_POOL
        return tuple(s for s in servers if s not in pooled), "(no pool)"
    chosen = {s for _, members in mine for s in members}
    return tuple(s for s in servers if s in chosen), ", ".join(g for g, _ in mine)


def _unquoted(problems: list[str], key: str, unquoted: frozenset[str]) -> list[str]:
    """``problems`` about ``key``, with the entries they quote left out when its value came from client.conf."""
    if key not in unquoted or not problems:
        return problems
    return [f"{key}: {len(problems)} entries not valid (not quoted: they may hold a secret); skipped"]


def refusal(settings: ClientSettings) -> str:
    """Why these settings must not be used to poll at all ("" when they may).

    SNMPv3 without both passphrases is refused, never downgraded: falling back to SNMPv2c would send
    the community in clear on a network the admin chose to protect.
    """
    if settings.snmp_version not in ("2c", "3"):
        return "LB_SNMP_VERSION: not 2c or 3; not polling (no fallback to SNMPv2c in clear)"
    if settings.snmp_version == "3":
        missing = [v for v, attr in (("LB_SNMP_AUTH_PASSPHRASE", "auth_passphrase"),
                                     ("LB_SNMP_PRIV_PASSPHRASE", "priv_passphrase")) if not getattr(settings, attr)]
        if missing:
            return (f"LB_SNMP_VERSION: 3 needs {' and '.join(missing)} (8 characters or more); "
                    "not polling (no fallback to SNMPv2c in clear)")
    return ""


def parse_servers(text: str, default_port: int) -> tuple[tuple[Server, ...], list[str]]:
    """The server list; bad entries are reported (naming LB_SERVERS) and skipped, duplicates dropped."""
    out: list[Server] = []
    problems = []
    skipped = 0
    for entry in text.replace(",", " ").split():
        try:
            server = parse_server(entry, default_port)
        except ConfigError as exc:
            skipped += 1
            if skipped <= _MAX_ENTRY_PROBLEMS:
                problems.append(f"LB_SERVERS: {exc}; skipped")
            continue
        if server not in out:
            out.append(server)
    if skipped > _MAX_ENTRY_PROBLEMS:
        problems.append(f"LB_SERVERS: {skipped - _MAX_ENTRY_PROBLEMS} more bad entries skipped")
    return tuple(out), problems


_MAX_ENTRY_PROBLEMS = 5  # bad LB_SERVERS entries reported one by one; the rest are counted


DEFAULT_SAMPLE_WEIGHT = 100  # lbWeight's own default: a server the admin did not size is a reference server
_MAX_WEIGHT = mib.maximum("lbWeight")  # the MIB's range, as snmplb-admin's (adminfile.MAX_WEIGHT)


SampleWeights = tuple[tuple[str, int, int], ...]  # LB_SAMPLE_WEIGHTS: (host, port or 0 for any, weight)


def parse_sample_weights(text: str, servers: tuple[Server, ...]) -> tuple[SampleWeights, list[str]]:
    """LB_SAMPLE_WEIGHTS: ``host=weight`` entries as (host, port, weight) triples, port 0 meaning any
    port (an entry written without one). Bad entries, and entries naming no server of ``servers``, are
    reported (naming LB_SAMPLE_WEIGHTS) and skipped: their servers count as DEFAULT_SAMPLE_WEIGHT, as if
    the variable were unset, which is the draw of every version before this one."""
    out: dict[tuple[str, int], int] = {}
    problems: list[str] = []
    skipped = 0
    configured = {(s.host, s.port) for s in servers}
    hosts = {s.host for s in servers}
    for entry in text.replace(",", " ").split():
        name, sep, raw = entry.rpartition("=")
        try:
            if not sep or not name:
                raise ConfigError(f"{shown(entry)} is not host=weight")
            server = parse_server(name, 0)  # 0: no port written, the entry sizes the host on every port
            try:
                weight = _int(0, _MAX_WEIGHT)(raw)
            except ConfigError as exc:
                raise ConfigError(f"{shown(name)}: the weight {exc}") from None
            known = server.host in hosts if server.port == 0 else (server.host, server.port) in configured
            if not known:
                raise ConfigError(f"{shown(name)} is not in LB_SERVERS")
            if (server.host, server.port) in out:
                raise ConfigError(f"{shown(name)} is listed twice; the first kept")
        except ConfigError as exc:
            skipped += 1
            if skipped <= _MAX_ENTRY_PROBLEMS:
                problems.append(f"LB_SAMPLE_WEIGHTS: {exc}; skipped")
            continue
        out[(server.host, server.port)] = weight
    if skipped > _MAX_ENTRY_PROBLEMS:
        problems.append(f"LB_SAMPLE_WEIGHTS: {skipped - _MAX_ENTRY_PROBLEMS} more bad entries skipped")
    return tuple((h, p, w) for (h, p), w in out.items()), problems


def sample_weights_of(servers: tuple[Server, ...], hints: SampleWeights) -> list[int]:
    """Each server's weight for LB_SAMPLE's draw: its ``host:port=`` entry, else its ``host=`` entry,
    else DEFAULT_SAMPLE_WEIGHT."""
    by_key = {(h, p): w for h, p, w in hints}
    return [by_key.get((s.host, s.port), by_key.get((s.host, 0), DEFAULT_SAMPLE_WEIGHT)) for s in servers]
