"""The synchronous driver of the login selection: the real poll and the lbserver around ``Selection``.

``select`` is what every front end on a thin client runs (get_hosts, `snmplb
pick` and `connect`, `snmplb status`, `snmplb feed`, the chooser): it asks the
``Selection`` for a plan, polls (``poller.poll``, the hedge when the selection
says so) and asks ltsp-cluster's lbserver at the same time when the plan says
so, until ONE deadline computed by the caller's edge (``deadline``), then
hands the states back for the decision. The simulator (bench/storm.py) drives
the same ``Selection`` with its simulated fleet instead.
"""

from __future__ import annotations

import random
import time

from snmplb.client.poller import poll
from snmplb.client.selection import Plan, Result, Selection, User
from snmplb.client.settings import ClientSettings
from snmplb.client.serverstate import ServerState

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Callable


def new_rng(settings: ClientSettings) -> random.Random:
    """The random source of a login: seeded by LB_SEED (tests), else the system's."""
    return random.Random(settings.seed) if settings.seed is not None else random.SystemRandom()


def client_id(settings: ClientSettings, always: bool = False) -> str:
    """This client's identity for `sticky`: LB_CLIENT_ID, else the default route's MAC, read only when
    the algorithm is `sticky` (or ``always``: the status view shows every algorithm's pick)."""
    given: str = settings.client_id  # typed for mypy (a record's fields are Any to it)
    if given:
        return given
    if settings.algorithm != "sticky" and not always:
        return ""
    from snmplb.client.clientid import default_mac

    return default_mac()


def selection_for(settings: ClientSettings, every_algorithm: bool = False, user: User | None = None) -> Selection:
    """The Selection of a login on this thin client: its rng (``new_rng``) and identity (``client_id``),
    and the ``user`` where known (``user_for``)."""
    return Selection(settings, new_rng(settings), client_id(settings, every_algorithm), user)


def _grouplist(name: str, gid: int) -> list[int]:
    """``os.getgrouplist``, with the GIL released while NSS answers: CPython's holds it for the whole
    call, so a lookup hanging on a dead directory would hold every thread, ``groups_within``'s timeout
    included (ctypes releases it)."""
    import ctypes

    if "\0" in name:
        raise ValueError("NUL in a user name")
    getgrouplist = ctypes.CDLL(None, use_errno=True).getgrouplist
    size = 64
    while True:
        groups, count = (ctypes.c_uint * size)(), ctypes.c_int(size)
        if getgrouplist(name.encode("utf-8", "surrogateescape"), ctypes.c_uint(gid), groups, ctypes.byref(count)) >= 0:
            return list(groups[:count.value])
        if count.value <= size or size >= 1 << 16:
            raise OSError(ctypes.get_errno(), "getgrouplist failed")
        size = count.value


def groups_of(name: str) -> tuple[tuple[str, ...], str]:
    """The groups of user ``name`` as NSS sees them here (primary first), and "" ; or () and why not."""
    import grp
    import os
    import pwd

    try:
        gid = pwd.getpwnam(name).pw_gid
        gids = _grouplist(name, gid)
    except (KeyError, OSError, ValueError):  # ValueError: a NUL in the name
        return (), "not known to NSS on this computer"
    names = []
    for g in dict.fromkeys([gid, *gids]):
        try:
            names.append(grp.getgrgid(g).gr_name)
        except KeyError:
            continue  # a gid without a name: no pool names it
    return tuple(names), ""


def groups_within(name: str, seconds: float) -> tuple[tuple[str, ...], str]:
    """``groups_of``, waited for at most ``seconds``: NSS may ask a directory (LDAP, sssd) that does not
    answer, and the login's deadline holds for it too. A lookup that has not returned by then is left
    to finish on its own (a daemon thread: it never holds the exit)."""
    import threading

    found: list[tuple[tuple[str, ...], str]] = []
    lookup = threading.Thread(target=lambda: found.append(groups_of(name)), name="nss", daemon=True)
    lookup.start()
    lookup.join(max(0.0, seconds))
    if not found:
        return (), f"not known to NSS on this computer within {seconds * 1000:.0f} ms (no answer)"
    return found[0]


def user_for(settings: ClientSettings, name: str, deadline: float | None = None,
             clock: Callable[[], float] = time.monotonic) -> tuple[User, list[str]]:
    """The ``User`` of a login for ``name``: their groups (NSS, for LB_POOLS) and their question (asked
    when LB_AFFINITY is yes and LB_AFFINITY_KEY_FILE holds a usable key), with the problems met on the
    way, named by their setting. A fresh nonce per login (the system's random source, not LB_SEED's:
    the same question twice would tell a listener that two logins were one user's). ``deadline``: the
    login's (a ``clock()`` time); the NSS lookup gets at most half of the time left (50 ms at least:
    a slow start-up may have spent it all), the poll the rest."""
    import os

    from snmplb import affinity

    problems = []
    groups: tuple[str, ...] = ()
    if not name.isprintable() or len(name.encode("utf-8", "surrogateescape")) > affinity.MAX_USER_BYTES:
        # Typed at a login screen (the PAM hook): never printed as it came, never asked about.
        from snmplb.kvfile import shown

        return User(shown(name[:40]), ()), [f"--user: {shown(name[:40])} is not a user name (a control "
                                            f"character, or longer than {affinity.MAX_USER_BYTES} bytes): "
                                            "in no pool, no affinity"]
    if settings.pools:
        if deadline is None:
            groups, why = groups_of(name)
        else:
            groups, why = groups_within(name, max(0.05, (deadline - clock()) / 2))  # files, sssd's cache: < 1 ms
        if why:
            problems.append(f"LB_POOLS: user {name!r} is {why}: in no group")
    if not settings.affinity:
        return User(name, groups), problems
    if not settings.affinity_key_file:
        return User(name, groups), problems
    key, problem = affinity.read_key(settings.affinity_key_file, "LB_AFFINITY_KEY_FILE", agent=False)
    if key is None:
        return User(name, groups), problems + ([problem] if problem else [])
    return User(name, groups, affinity.question(key, name, os.urandom(affinity.NONCE_SIZE))), problems


def gather(selection: Selection, plan: Plan, *, deadline: float, clock: Callable[[], float] = time.monotonic
           ) -> tuple[list[ServerState], str | None, str]:
    """Poll as ``plan`` says and ask the lbserver meanwhile (``plan.ask_lbserver``), until ``deadline``
    (a ``clock()`` time). Returns the polled servers' states (the hedge's, if it was polled, after them),
    lbserver's choice (or None) and why it has none ("" when it was not asked)."""
    if plan.refused:
        return Selection.not_polled(plan), None, ""
    settings = selection.settings._replace(servers=plan.polled)  # the poller's view: the servers it polls

    def our_poll() -> list[ServerState]:
        return poll(settings, selection.rng, clock, plan.early, deadline=deadline, hedge=plan.hedge,
                    usable=selection.usable, question=plan.question)

    if not plan.ask_lbserver:
        return our_poll(), None, ""
    import threading

    from snmplb.client.lbserver import ask_lbserver

    answer: list[tuple[str | None, str]] = []

    def lbserver() -> None:
        try:
            answer.append(ask_lbserver(selection.settings.lbserver_url, deadline, clock))
        except Exception as exc:  # the thread's outer edge: a traceback would reach the login's stderr
            answer.append((None, f"lbserver: internal error ({type(exc).__name__})"))

    t = threading.Thread(target=lbserver, daemon=True)
    t.start()
    servers = our_poll()
    t.join(max(0.0, deadline - clock()))
    choice, why = answer[0] if answer else (None, "lbserver did not answer in time")
    return servers, choice, why


def select(selection: Selection, *, deadline: float, every: bool = False, ask_lbserver: bool | None = None,
           clock: Callable[[], float] = time.monotonic) -> tuple[Result, str | None, str]:
    """One login's (or one refresh's) poll and decision: the plan, ``gather``, ``Selection.decide``.
    Returns the result, lbserver's choice and lbserver's complaint ("" when none)."""
    plan = selection.plan(every, ask_lbserver)
    states, choice, why = gather(selection, plan, deadline=deadline, clock=clock)
    return selection.decide(plan, states, choice), choice, why
