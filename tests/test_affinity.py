"""Users, not only logins: back to a running session (affinity), pools by group.

The question about a user's sessions (snmplb.affinity) rides in the GET of lbRow; the agent answers it
from its users' sessions with the site key; the selection puts the user's own server first. Pure tables
first, then real snmpd agents on loopback with `snmplb pick --user` and `ssh` through
`ProxyCommand snmplb connect --user %r %p` (real OpenSSH). What each login path leaves behind on a
real server, and the agent's counting of it, is tests/test_usersessions.py's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, COMMUNITY, IDLE
from snmplb import affinity, mib
from snmplb.adminfile import AdminSettings
from snmplb.agent.usersessions import Answers, UserSessions
from snmplb.client import ber, snmpcodec
from snmplb.client.serverquery import V2cQuery, oids_asked, row_from_pdu
from snmplb.client.serverstate import Failure, ServerState
from snmplb.client.selection import Selection, User
from snmplb.client.settings import Server, from_env, pool_of
from snmplb.lab.fleet import FakeLoad
from support import row

KEY = "Zq7^Xw9!Vb2~Kp4|Mn8@JhRt5%Gf3*Cd1="  # test key: a reader of a message must never see a run of it


def key_file(tmp_path: Path, text: str = KEY, mode: int = 0o600, name: str = "affinity.key") -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def leaks(message: str, secret: str = KEY) -> bool:
    """Whether ``message`` shows any 3 consecutive characters of ``secret``."""
    return any(secret[i:i + 3] in message for i in range(len(secret) - 2))


# --- the question ---------------------------------------------------------------------------------


def test_the_question_names_nobody_and_two_logins_of_one_user_look_unrelated():
    key = KEY.encode()
    one = affinity.question(key, "ann", b"\x01" * 8)
    two = affinity.question(key, "ann", b"\x02" * 8)
    assert len(one) == len(two) == 24 == mib.COLUMN_BY_NAME["lbUserQuery"].range[1]
    assert b"ann" not in one and one[8:] != two[8:]  # fresh nonce: nothing links the two
    assert affinity.who(key, one, ["bob", "ann", "annie"]) == "ann"
    assert affinity.who(key, two, ["bob", "annie"]) is None
    assert affinity.who(b"another-site-key-123", one, ["ann"]) is None  # without the key: no user
    assert affinity.who(key, one[:-1], ["ann"]) is None
    sessions, waiting = affinity.instances(one)
    assert affinity.parse_instance(sessions) == ("lbUserSessions", one)
    assert affinity.parse_instance(waiting) == ("lbUserWaiting", one)
    assert affinity.parse_instance(sessions[:-1]) is None and affinity.parse_instance(mib.ROW.instance) is None
    assert affinity.parse_instance(sessions[:-1] + (256,)) is None


@pytest.mark.parametrize("mode, agent, problem", [
    (0o600, True, ""), (0o640, True, ""), (0o644, False, ""),
    (0o644, True, "may be read by every user"), (0o620, False, "may be written"), (0o602, True, "may be written"),
])
def test_the_key_files_rules_and_messages_that_never_quote_it(tmp_path, mode, agent, problem):
    path = key_file(tmp_path, mode=mode)
    key, said = affinity.read_key(str(path), "affinity_key_file", agent=agent)
    if problem:
        assert key is None and problem in said and "affinity_key_file" in said and str(path) in said
        assert not leaks(said)
    else:
        assert (key, said) == (KEY.encode(), "")


def test_a_short_a_binary_a_missing_or_a_linked_key_is_refused_by_name_and_without_a_character(tmp_path):
    for text in ("Qz9^Wx", KEY[:10] + "\x01" + KEY[10:]):
        key, said = affinity.read_key(str(key_file(tmp_path, text)), "LB_AFFINITY_KEY_FILE", agent=False)
        assert key is None and "at least 32 printable characters" in said and "LB_AFFINITY_KEY_FILE" in said
        assert not leaks(said, text)
    key, said = affinity.read_key(str(tmp_path / "absent"), "LB_AFFINITY_KEY_FILE", agent=False)
    assert key is None and "cannot be read" in said
    target = key_file(tmp_path, name="real.key")
    (tmp_path / "link.key").symlink_to(target)
    key, said = affinity.read_key(str(tmp_path / "link.key"), "LB_AFFINITY_KEY_FILE", agent=False)
    assert key is None and "cannot be read" in said  # O_NOFOLLOW: a link planted there is no key
    assert affinity.read_key("", "LB_AFFINITY_KEY_FILE", agent=False) == (None, "")  # unset: off, silently


# --- the answer in the reply ------------------------------------------------------------------------


def _reply(oids, user_values):
    text = mib.encode_row(list(row().values())).encode()
    binds = [(oids[0], ber.Tlv(ber.OCTET_STRING, text))]
    binds += [(oid, value) for oid, value in zip(oids[1:], user_values)]
    return snmpcodec.Pdu(ber.RESPONSE, 1, 0, 0, tuple(binds))


def _gauge(n: int) -> ber.Tlv:
    return ber.Tlv(ber.GAUGE32, ber.enc_int(n, ber.GAUGE32)[2:])


def test_the_users_answers_are_read_checked_and_optional():
    oids = oids_asked(affinity.question(KEY.encode(), "ann", b"\x00" * 8))
    assert len(oids) == 3 and oids[0] == mib.ROW.instance
    values, failure, _ = row_from_pdu(_reply(oids, [_gauge(2), _gauge(1)]), oids)
    assert (values["lbUserSessions"], values["lbUserWaiting"], failure) == (2, 1, "")
    no = ber.Tlv(ber.NO_SUCH_INSTANCE, b"")  # an agent without the key, or older than lbUserTable
    values, failure, _ = row_from_pdu(_reply(oids, [no, no]), oids)
    assert failure == "" and "lbUserSessions" not in values
    state = ServerState("a", 161, values, "", 1.0)
    assert state.user_sessions is None and state.ok
    for bad, kind in (([_gauge(1), _gauge(2)], Failure.IMPLAUSIBLE), ([_gauge(1), no], Failure.IMPLAUSIBLE),
                      ([ber.Tlv(ber.OCTET_STRING, b"1"), _gauge(0)], Failure.MALFORMED)):
        values, failure, _ = row_from_pdu(_reply(oids, bad), oids)
        assert (values, failure) == (None, kind)
    values, failure, _ = row_from_pdu(_reply(oids[:1], []), oids)  # the user's varbinds left out: not our reply
    assert (values, failure) == (None, Failure.MALFORMED)


def test_the_question_goes_in_the_one_datagram_of_each_request():
    question = affinity.question(KEY.encode(), "ann", b"\x00" * 8)
    settings, _ = from_env({"LB_SERVERS": "127.0.0.1", "LB_SNMP_COMMUNITY": COMMUNITY})
    q = V2cQuery(Server("127.0.0.1"), settings, random.Random(1), interval=0.25, max_sends=2, question=question)
    datagram = q.start(0.0)
    from pysnmp.proto.api import v2c  # the reference codec
    from pyasn1.codec.ber import decoder

    message, _ = decoder.decode(datagram, asn1Spec=v2c.Message())
    names = [tuple(vb[0]) for vb in v2c.apiPDU.get_varbinds(v2c.apiMessage.get_pdu(message))]
    assert names == q.oids and names[:1] == oids_asked() and set(oids_asked(question)) <= set(names)  # and a decoy
    assert b"ann" not in datagram and KEY.encode()[:4] not in datagram


# --- the rule ------------------------------------------------------------------------------------------


def _state(name, sessions=None, waiting=0, **kw) -> ServerState:
    values = row(**kw)
    if sessions is not None:
        values.update(lbUserSessions=sessions, lbUserWaiting=waiting)
    return ServerState(name, 161, values, "", 1.0)


def _decide(states, user="ann", question=b"q" * 24, **env):
    settings, problems = from_env({"LB_SERVERS": " ".join(s.name for s in states), "LB_SEED": "3", **env})
    assert problems == []
    selection = Selection(settings, random.Random(3), "", User(user, (), question) if user else None)
    plan = selection.plan()
    return selection.decide(plan, states)


def test_a_user_goes_back_to_a_server_that_holds_a_session_of_theirs():
    fleet = [_state("idle"), _state("busy", sessions=1, load_per_cpu=1.6), _state("idle2")]
    result = _decide(fleet)
    assert result.decision.hosts[0] == "busy" and "ann has 1 session on busy" in result.affinity
    assert result.usable and set(result.decision.hosts) == {"busy", "idle", "idle2"}  # the rest: failover
    # The same fleet without the user's sessions: the algorithm's own decision, unchanged.
    plain = [_state("idle"), _state("busy", sessions=0, load_per_cpu=1.6), _state("idle2")]
    assert _decide(plain).decision == _decide(plain, user="").decision and _decide(plain).affinity == ""


def test_a_waiting_session_comes_first_then_the_configured_order():
    fleet = [_state("a", sessions=1), _state("b", sessions=2, waiting=1), _state("c", sessions=1, waiting=1)]
    assert _decide(fleet).decision.hosts[:3] == ("b", "c", "a")
    assert "1 waiting for a reconnect" in _decide(fleet).affinity


@pytest.mark.parametrize("admin, expected", [("draining", "home"), ("disabled", "other"), ("enabled", "home")])
def test_draining_still_takes_its_own_sessions_back_and_disabled_does_not(admin, expected):
    fleet = [_state("home", sessions=1, waiting=1, admin=admin), _state("other")]
    assert _decide(fleet).decision.hosts[0] == expected
    in_use = [_state("home", sessions=1, waiting=0, admin=admin), _state("other")]  # nothing to resume
    assert _decide(in_use).decision.hosts[0] == ("home" if admin == "enabled" else "other")


def test_a_full_server_takes_its_users_back_an_unavailable_or_silent_one_does_not():
    full = _state("full", sessions=1, waiting=1, max_sessions=3)
    full.values.update(lbSessions=3, lbStatus=mib.enum("lbStatus", "full"))
    assert _decide([full, _state("other")]).decision.hosts[0] == "full"
    full.values.update(lbUserWaiting=0)  # its sessions in use: a login there would be one more
    assert _decide([full, _state("other")]).decision.hosts[0] == "other"
    gone = _state("gone", sessions=1, waiting=1)
    gone.values.update(lbStatus=mib.enum("lbStatus", "unavailable"))
    assert _decide([gone, _state("other")]).decision.hosts == ("other",)
    silent = ServerState.failed("silent", 161, Failure.UNREACHABLE, "no answer")
    assert _decide([silent, _state("other")]).decision.hosts == ("other",)


def test_lb_affinity_no_and_max_hosts():
    fleet = [_state("a"), _state("b", sessions=1)]
    assert _decide(fleet, LB_AFFINITY="no").affinity == ""
    assert _decide(fleet, LB_MAX_HOSTS="1").decision.hosts == ("b",)


def test_with_a_question_every_server_of_the_pool_is_polled_whatever_lb_sample():
    settings, _ = from_env({"LB_SERVERS": "a b c d e f", "LB_SAMPLE": "2"})
    asked = Selection(settings, random.Random(1), "", User("ann", (), b"q" * 24)).plan()
    assert (len(asked.polled), asked.hedge, asked.question) == (6, (), b"q" * 24)
    sampled = Selection(settings, random.Random(1), "", User("ann", ())).plan()  # no key: no question
    assert (len(sampled.polled), len(sampled.hedge)) == (2, 4)


# --- pools --------------------------------------------------------------------------------------------


def test_pools_by_group_the_default_pool_and_bad_entries_named():
    env = {"LB_SERVERS": "s1 s2 s3:1161 s4 [fd00::5]", "LB_POOLS": "staff: s1 s2; students: s3 fd00::5; x; zz: nowhere"}
    settings, problems = from_env(env)
    assert problems == ["LB_POOLS: 'x' is not 'group: host host ...'; skipped",
                        "LB_POOLS: zz: 'nowhere' is not in LB_SERVERS; skipped",
                        "LB_POOLS: group 'zz' has no server of LB_SERVERS; skipped"]
    names = lambda servers: [s.host for s in servers]  # noqa: E731
    assert names(pool_of(settings, ("users", "staff"))[0]) == ["s1", "s2"]
    assert names(pool_of(settings, ("staff", "students"))[0]) == ["s1", "s2", "s3", "fd00::5"]
    assert names(pool_of(settings, ("users",))[0]) == ["s4"]  # in no pool: the servers in none
    settings, _ = from_env({**env, "LB_POOLS": "staff: s1; *: s2 s3"})
    assert names(pool_of(settings, ())[0]) == ["s2", "s3"]
    settings, _ = from_env({**env, "LB_POOLS": "a: s1 s2 s3 s4 fd00::5"})
    assert pool_of(settings, ())[0] == ()  # every server pooled and no '*': none for outsiders


def test_a_user_in_no_pool_with_every_server_pooled_is_told_so():
    settings, _ = from_env({"LB_SERVERS": "s1 s2", "LB_POOLS": "staff: s1 s2"})
    selection = Selection(settings, random.Random(1), "", User("eve", ("users",)))
    result = selection.decide(selection.plan(), [])
    assert result.decision.hosts == () and "no server for eve" in result.decision.note and not result.usable


# --- real agents ----------------------------------------------------------------------------------------


def pick(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "5000",
            "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf", **env}
    return subprocess.run([str(BIN / "snmplb"), "pick", *args], env=full, capture_output=True, text=True, timeout=60)


def _addr(inst) -> str:
    return f"{inst.host}:{inst.port}"


@pytest.fixture
def keyed(fleet, tmp_path):
    """Three agents with the site key: idle, lightly loaded, and busy with ann's session."""
    key = key_file(tmp_path)
    conf = {"affinity_key_file": str(key)}
    insts = [fleet.add("idle", IDLE, settings=conf), fleet.add("light", FakeLoad(load1=1.0, cpus=4), settings=conf),
             fleet.add("busy", FakeLoad(load1=6.0, cpus=4, sessions=(("ann", "10.0.0.7"), ("cy", "10.0.0.8"))),
                       settings=conf)]
    return key, insts


@pytest.mark.fleet
def test_pick_sends_a_returning_user_home_and_a_newcomer_where_the_load_says(keyed):
    key, (idle, light, busy) = keyed
    env = {"LB_SERVERS": " ".join(_addr(i) for i in (idle, light, busy)), "LB_AFFINITY_KEY_FILE": str(key),
           "LB_ALGORITHM": "best"}  # deterministic, so that "where the load says" is one server
    r = pick("--user", "ann", "--json", **env)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["chosen"] == busy.host, r.stderr
    assert out["affinity"].startswith("affinity: ann has 1 session on " + busy.host)
    assert [s.get("user_sessions") for s in out["servers"]] == [0, 0, 1]
    assert pick("--user", "bob", **env).stdout.strip() == idle.host  # no session anywhere: the load decides
    assert pick("--user", "ann", LB_AFFINITY="no", **env).stdout.strip() == idle.host
    assert pick(**env).stdout.strip() == idle.host  # no user (get_hosts' case): the load decides
    no_key = {k: v for k, v in env.items() if k != "LB_AFFINITY_KEY_FILE"}
    assert pick("--user", "ann", **no_key).stdout.strip() == idle.host  # no key on the client: nothing asked
    # The admin's view says when affinity decides, for whom and where.
    status = subprocess.run([str(BIN / "snmplb"), "status", "--user", "ann"], capture_output=True, text=True,
                            timeout=60, env={"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY,
                                             "LB_TIMEOUT_MS": "5000", "SNMPLB_CLIENT_CONF": "/nonexistent", **env})
    assert f"affinity: ann has 1 session on {busy.host}: every algorithm's pick puts that server first" \
        in status.stdout, status.stdout + status.stderr
    as_json = subprocess.run([str(BIN / "snmplb"), "status", "--json", "--user", "bob"], capture_output=True,
                             text=True, timeout=60, env={"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY,
                                                         "SNMPLB_CLIENT_CONF": "/nonexistent", **env})
    report = json.loads(as_json.stdout)
    assert report["affinity"] is None and [s["user_sessions"] for s in report["servers"]] == [0, 0, 0]


@pytest.mark.fleet
def test_a_draining_home_takes_its_user_back_a_disabled_one_does_not(keyed):
    key, (idle, light, busy) = keyed
    env = {"LB_SERVERS": " ".join(_addr(i) for i in (idle, light, busy)), "LB_AFFINITY_KEY_FILE": str(key),
           "LB_ALGORITHM": "best"}
    busy.set_admin(AdminSettings(state="draining"))
    from conftest import wait_for

    assert wait_for(lambda: pick(**env).returncode == 0 and pick("--json", **env).stdout.count('"draining"'), 10)
    # ann's session there is an ssh login in use (logind, nothing waiting): drain means no new login
    # next to it. A session waiting for a reconnect is taken back (the pure rule tests above).
    assert pick("--user", "ann", **env).stdout.strip() == idle.host
    busy.set_admin(AdminSettings(state="enabled"))
    assert wait_for(lambda: pick("--user", "ann", **env).stdout.strip() == busy.host, 10)
    busy.set_admin(AdminSettings(state="disabled"))
    assert wait_for(lambda: pick("--user", "ann", **env).stdout.strip() == idle.host, 10)


@pytest.mark.fleet
def test_an_agent_without_the_key_or_with_another_answers_nothing_and_no_walk_lists_a_question(fleet, tmp_path,
                                                                                                  netsnmp):
    other = key_file(tmp_path, "Yy6^Oo3!Uu1~Ee5|Aa0@IiPp8%Ll2*Kk4=", name="other.key")
    sessions = (("ann", "10.0.0.7"),)
    plain = fleet.add("plain", FakeLoad(load1=6.0, cpus=4, sessions=sessions))
    wrong = fleet.add("wrong", FakeLoad(load1=6.0, cpus=4, sessions=sessions), settings={"affinity_key_file": str(other)})
    idle = fleet.add("idle", IDLE)
    key = key_file(tmp_path)
    env = {"LB_SERVERS": " ".join(_addr(i) for i in (plain, wrong, idle)), "LB_AFFINITY_KEY_FILE": str(key),
           "LB_ALGORITHM": "best"}  # deterministic: the idle one, unless affinity decided
    r = pick("--user", "ann", "--json", **env)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["chosen"] == idle.host and out["affinity"] is None
    assert [s.get("user_sessions") for s in out["servers"]] == [None, 0, None]  # no key: noSuchInstance
    # net-snmp's own tools: the question's instance answers 0 under another key, and a walk lists none.
    sessions_oid, _ = affinity.instances(affinity.question(KEY.encode(), "ann", b"12345678"))
    get = netsnmp.v2c("snmpget", wrong, mib.oid_str(sessions_oid))
    assert get.returncode == 0 and "Gauge32: 0" in get.stdout, get.stdout + get.stderr
    walk = netsnmp.v2c("snmpwalk", wrong, mib.oid_str(mib.ROOT))
    assert walk.returncode == 0 and ".377.1.100" not in walk.stdout and "377.1.36.0" in walk.stdout
    assert "ann" not in (wrong.dir / "agent.log").read_text()


@pytest.mark.fleet
def test_an_unsafe_key_file_on_the_agent_turns_affinity_off_with_a_log_line_naming_it(fleet, tmp_path):
    loose = key_file(tmp_path, mode=0o644)
    inst = fleet.add("loose", FakeLoad(sessions=(("ann", "10.0.0.7"),)), settings={"affinity_key_file": str(loose)})
    env = {"LB_SERVERS": _addr(inst), "LB_AFFINITY_KEY_FILE": str(key_file(tmp_path, name="client.key"))}
    out = json.loads(pick("--user", "ann", "--json", **env).stdout)
    assert out["servers"][0].get("user_sessions") is None
    log = (inst.dir / "agent.log").read_text()
    assert "affinity_key_file" in log and "may be read by every user" in log and not leaks(log)


@pytest.mark.fleet
@pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="openssh-server not installed")
def test_ssh_through_connect_user_r_lands_where_the_users_session_runs(fleet, tmp_path):
    from farm import Farm

    key = key_file(tmp_path)
    conf = {"affinity_key_file": str(key)}
    insts = [fleet.add("app1", IDLE, settings=conf), fleet.add("app2", IDLE, settings=conf),
             fleet.add("app3", FakeLoad(load1=5.0, cpus=4, sessions=(("root", "10.0.0.9"),)), settings=conf)]
    with Farm(tmp_path / "farm", {i.name: i.host for i in insts}) as farm:
        config = farm.config.read_text().replace("connect --connect-timeout 3 %p",
                                                 "connect --connect-timeout 3 --user %r %p")
        farm.config.write_text(config)
        env = {"LB_SERVERS": " ".join(_addr(i) for i in insts), "LB_SNMP_COMMUNITY": COMMUNITY,
               "LB_TIMEOUT_MS": "5000", "SNMPLB_CLIENT_CONF": "/nonexistent", "LB_AFFINITY_KEY_FILE": str(key),
               "LB_ALGORITHM": "best"}  # deterministic: without affinity an idle server, never app3
        assert farm.who(env) == "app3"  # the farm logs in as root (User root): root's session is on app3
        assert farm.who({**env, "LB_AFFINITY": "no"}) in ("app1", "app2")


@pytest.mark.fleet
def test_snmplb_admin_writes_a_key_both_sides_accept_and_never_shows_it(tmp_path):
    path = tmp_path / "etc" / "affinity.key"
    r = subprocess.run([str(BIN / "snmplb-admin"), "affinity-key", str(path), "--group", "root"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "wrote a new site key" in r.stdout, r.stderr
    key = path.read_text().strip()
    assert len(key) >= 40 and not leaks(r.stdout + r.stderr, key)
    assert oct(path.stat().st_mode & 0o777) == "0o640" and path.stat().st_gid == 0
    assert affinity.read_key(str(path), "affinity_key_file", agent=True) == (key.encode(), "")
    assert affinity.read_key(str(path), "LB_AFFINITY_KEY_FILE", agent=False)[0] == key.encode()
    again = subprocess.run([str(BIN / "snmplb-admin"), "affinity-key", str(path)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2 and "--force" in again.stderr and path.read_text().strip() == key


@pytest.fixture
def nss_user():
    """A user in two groups, as NSS sees them (useradd/groupadd; removed after)."""
    import pwd
    import shutil as sh

    if sh.which("useradd") is None or os.geteuid() != 0:
        pytest.skip("needs root and useradd (passwd)")
    user, groups = "snmplbtst-ann", ("snmplbtst-staff", "snmplbtst-lab")
    for g in groups:
        subprocess.run(["groupadd", "-f", g], check=True, capture_output=True)
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-M", "-N", "-G", ",".join(groups), "-s", "/usr/sbin/nologin", user],
                       check=True, capture_output=True)
    try:
        yield user
    finally:
        subprocess.run(["userdel", user], capture_output=True)
        for g in groups:
            subprocess.run(["groupdel", g], capture_output=True)


@pytest.mark.fleet
def test_pools_follow_the_users_groups_as_nss_sees_them(fleet, nss_user):
    a, b, c = fleet.add("a", IDLE), fleet.add("b", IDLE), fleet.add("c", FakeLoad(load1=3.0, cpus=4))
    env = {"LB_SERVERS": " ".join(_addr(i) for i in (a, b, c)), "LB_ALGORITHM": "best",
           "LB_POOLS": f"snmplbtst-staff: {c.host}; students: {a.host}; *: {b.host}"}
    r = pick("--user", nss_user, "--all", **env)
    assert (r.returncode, r.stdout.split()) == (0, [c.host]), r.stderr  # staff: c only, busy or not
    assert pick("--user", "root", "--all", **env).stdout.split() == [b.host]  # in no pool: '*'
    r = pick("--user", "snmplbtst-nobody-here", "--all", **env)
    assert r.stdout.split() == [b.host] and "not known to NSS" in r.stderr
    assert set(pick("--all", **env).stdout.split()) == {a.host, b.host, c.host}  # no user (get_hosts' case): every server


# --- review: hostile and slow surroundings -------------------------------------------------------------


@pytest.mark.fleet
def test_a_hanging_nss_lookup_does_not_hold_the_login_beyond_lb_timeout_ms(tmp_path):
    """LDAP or sssd that does not answer: the user's groups are looked up within the login's deadline
    (the user is then in no group), and the poll still has its time."""
    import sys
    import time

    hang = ("import sys, time\n"
            "import snmplb.client.driver as d\n"
            "d.groups_of = lambda name: (time.sleep(30), ((), ''))[1]  # NSS asking a directory that is down\n"
            "from snmplb.login.command import main\n"
            "sys.exit(main(['pick', '--all', '--user', 'ann']))\n")
    env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "1500",
           "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf", "LB_SERVERS": "127.0.0.1:9 127.0.0.2:9",
           "LB_POOLS": "staff: 127.0.0.1; *: 127.0.0.2"}
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-c", hang], env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert took < 3.0, (took, r.stderr)
    assert "LB_POOLS: user 'ann'" in r.stderr and "NSS" in r.stderr


def _answered_by(table, oids):
    """The reply an agent's pass_persist ``table`` makes to a GET of ``oids`` (noSuchInstance for NONE)."""
    binds = []
    for oid in oids[1:]:
        entry = table.get(oid)
        binds.append(ber.Tlv(ber.NO_SUCH_INSTANCE, b"") if entry is None else _gauge(entry.value))
    return _reply(oids, binds)


def test_an_agent_that_says_every_user_has_a_waiting_session_here_is_caught_and_not_chosen():
    """Without the key an agent cannot tell one question from another, so a liar drawing every user's
    login to itself says yes to all of them: the client asks a decoy beside the real question (random
    octets, in random order), which an honest agent answers 0 (no user of its matches it)."""
    from snmplb.agent.passpersist import Table
    from snmplb.agent.usersessions import Answers, UserSessions

    question = affinity.question(KEY.encode(), "ann", b"\x07" * 8)
    settings, _ = from_env({"LB_SERVERS": "127.0.0.1", "LB_SNMP_COMMUNITY": COMMUNITY})
    for seed in range(8):
        q = V2cQuery(Server("127.0.0.1"), settings, random.Random(seed), interval=0.25, max_sends=2,
                     question=question)
        q.start(0.0)
        assert len(q.oids) == 5 and set(affinity.instances(question)) <= set(q.oids)  # still one datagram
        honest = Table((), Answers(KEY.encode(), {"ann": UserSessions(2, 1), "bob": UserSessions(1, 0)}))
        values, failure, _ = row_from_pdu(_answered_by(honest, q.oids), q.oids, question)
        assert (failure, values["lbUserSessions"], values["lbUserWaiting"]) == ("", 2, 1)
        liar = _reply(q.oids, [_gauge(1)] * 4)  # "a waiting session here", whatever the question
        values, failure, reason = row_from_pdu(liar, q.oids, question)
        assert (values, failure) == (None, Failure.IMPLAUSIBLE) and "decoy" in reason
    # One decoy per login: a liar that also sees the GETs to the other servers finds the same two there.
    from snmplb.client.poller import _Poll

    run = _Poll(settings, random.Random(1), lambda: 0.0, False, 1.0, lambda s: s.eligible, question)
    assert len(run.decoy) == 24 and run.decoy != question
    sets = {frozenset(V2cQuery(Server(f"10.0.0.{i}"), settings, random.Random(i), 0.25, 2, question, run.decoy).oids)
            for i in range(6)}
    assert sets == {frozenset(oids_asked(question, run.decoy))}
    # A key-less or older agent answers nothing to either: no affinity, the row stands.
    values, failure, _ = row_from_pdu(_answered_by(Table(()), q.oids), q.oids, question)
    assert failure == "" and "lbUserSessions" not in values


def test_a_flood_of_distinct_questions_cannot_hold_snmpd_on_the_agents_hmacs():
    """Each distinct question costs one HMAC per user with sessions here, and snmpd waits on every answer:
    a GET of a thousand questions (one datagram, with the community) held snmpd for most of a second.
    The agent spends at most a budget of HMACs per second on them; past it a question is answered
    noSuchInstance (the client decides without affinity), and the budget comes back with time."""
    import os
    import time

    from snmplb.agent.passpersist import Protocol, Table
    from snmplb.agent.usersessions import Answers, QuestionBudget, UserSessions

    now = [100.0]
    budget = QuestionBudget(clock=lambda: now[0])
    users = {f"user{i}": UserSessions(1, 0) for i in range(99)} | {"ann": UserSessions(2, 1)}
    table = Table((), Answers(KEY.encode(), users, budget))
    proto = Protocol()
    start = time.perf_counter()
    answered = 0
    for _ in range(1400):  # what one datagram of 64 KiB carries
        sessions, _ = affinity.instances(os.urandom(24))
        proto.feed("get", table, 0.0)
        answered += proto.feed(mib.oid_str(sessions), table, 0.0) != "NONE\n"
    assert time.perf_counter() - start < 0.35 and 0 < answered < 1400
    real = affinity.question(KEY.encode(), "ann", b"\x05" * 8)
    assert table.get(affinity.instances(real)[0]) is None  # over budget: no answer, rather than a late one
    now[0] += 1.0
    assert table.get(affinity.instances(real)[0]).value == 2  # a second later: answered again


def test_a_new_sample_between_the_two_answers_of_one_question_does_not_split_them(tmp_path):
    """snmpd asks pass_persist one varbind at a time: lbUserSessions from one sample's table and
    lbUserWaiting from the next. With the same sessions, the next sample's answers are the same object
    (its memo holds the question, and the budget is not spent again), so the pair stays whole."""
    from snmplb.agent.config import AgentConfig
    from snmplb.agent.service import Sampler
    from snmplb.agent.usersessions import Answers

    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "7").write_text("USER=ann\nREMOTE=1\nCLASS=user\nSTATE=active\n")
    sampler = Sampler(AgentConfig(sessions_dir=tmp_path / "sessions", affinity_key_file=str(key_file(tmp_path))))
    first = sampler._user_answers()
    assert isinstance(first, Answers)
    sampler.table = sampler.table.__class__((), first)
    question = affinity.question(KEY.encode(), "ann", b"\x09" * 8)
    sessions, waiting = affinity.instances(question)
    assert sampler.table.get(sessions).value == 1
    budget = sampler._question_budget
    at = budget._at
    budget.clock, budget._left = (lambda: at), 0  # spent by a flood meanwhile
    sampler.table = sampler.table.__class__((), sampler._user_answers())  # the next sample
    assert sampler.table.get(waiting) is not None and sampler.table.users is first


@pytest.mark.fleet
def test_a_group_lookup_that_hangs_in_c_does_not_hold_the_login_either(tmp_path):
    """The real lookup, not a stand-in: /etc/group a FIFO that nobody writes (in a mount namespace of
    the test's own), so that NSS's group lookup hangs as on a dead directory. CPython's os.getgrouplist
    holds the GIL while it waits, which no thread-and-timeout can get around."""
    import shutil
    import sys
    import time

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root (a mount namespace)")
    fifo = tmp_path / "group"
    os.mkfifo(fifo)
    script = (f"mount --bind {fifo} /etc/group && exec timeout -s KILL 20 {sys.executable} "
              f"{BIN / 'snmplb'} pick --all --user root")
    env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "1500",
           "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf", "LB_SERVERS": "127.0.0.1:9 127.0.0.2:9",
           "LB_POOLS": "staff: 127.0.0.1; *: 127.0.0.2"}
    start = time.monotonic()
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert took < 3.0, (took, r.stderr)
    assert "LB_POOLS: user 'root'" in r.stderr and "NSS" in r.stderr


def test_a_start_up_that_spent_the_deadline_still_leaves_a_quick_nss_its_answer():
    import time

    from snmplb.client.driver import user_for

    settings, _ = from_env({"LB_SERVERS": "s1 s2", "LB_POOLS": "root: s1"})
    user, problems = user_for(settings, "root", deadline=time.monotonic() - 5)
    assert "root" in user.groups and problems == []


def test_a_user_name_with_a_control_character_is_no_user_and_never_printed_as_it_came():
    from snmplb.client.driver import user_for

    settings, _ = from_env({"LB_SERVERS": "s1 s2", "LB_POOLS": "staff: s1", "LB_AFFINITY_KEY_FILE": "/nonexistent"})
    user, problems = user_for(settings, "ann\x1b[2J\nroot")
    assert user.question == b"" and user.groups == () and "\x1b" not in user.name and "\n" not in user.name
    assert len(problems) == 1 and "is not a user name" in problems[0] and "\x1b" not in problems[0]
    user, problems = user_for(settings, "a" * 300)
    assert user.question == b"" and "longer than 256 bytes" in problems[0] and len(problems[0]) < 200


# The question's MAC without hmac/hashlib (affinity.Keyed): the same octets, and no OpenSSL on a client.

@pytest.mark.parametrize("size", [0, 1, 16, 63, 64, 65, 200, affinity.MAX_KEY_BYTES])
def test_the_keyed_mac_is_hmac_sha256_for_every_key_length(size):
    key = bytes((7 * i + size) % 256 for i in range(size))
    keyed = affinity.Keyed(key)
    for message in (b"", b"x", bytes(range(256)) * 3):
        assert keyed.mac(message) == hmac.new(key, message, hashlib.sha256).digest()


def test_a_question_is_the_nonce_and_the_first_16_octets_of_the_mac_and_the_agent_finds_its_user():
    key, nonce = KEY.encode(), b"\x00\x01\x02\x03\x04\x05\x06\x07"
    asked = affinity.question(key, "zoë", nonce)
    assert asked == nonce + hmac.new(key, nonce + "zoë".encode(), hashlib.sha256).digest()[:16]
    assert affinity.who(key, asked, ["ann", "zoë", "bob"]) == "zoë"
    assert affinity.who(affinity.Keyed(key), asked, ["ann", "zoë"]) == "zoë"
    assert affinity.who(b"another-key-of-thirty-two-characters", asked, ["zoë"]) is None
    assert affinity.who(key, asked[:-1], ["zoë"]) is None
    answers = Answers(key, {"zoë": UserSessions(2, 1)})
    assert [answers.answer(c, asked) for c in ("lbUserSessions", "lbUserWaiting")] == [2, 1]
    with pytest.raises(ValueError):
        affinity.question(key, "zoë", b"short")


@pytest.mark.fleet  # a process of its own (conftest.py: markers)
def test_a_clients_question_loads_neither_hashlib_nor_openssl():
    # hashlib (and hmac, which imports it) loads libcrypto: ~3 ms of every `pick --user` (docs/benchmarks.md).
    code = ("import sys; from snmplb import affinity; affinity.with_decoy(affinity.question(b'k' * 32, 'ann', "
            "bytes(8))); print(sorted(m for m in ('hashlib', 'hmac', '_hashlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(affinity.__file__).parents[1]))
    assert out.stdout.strip() == "[]", out


def test_on_an_agent_a_key_readable_by_a_group_it_is_not_in_is_refused():
    import stat

    regular = stat.S_IFREG
    # 0640 root:Debian-snmp read by the agent (in that group): fine; by a group of users the agent is
    # not in (snmplb-admin affinity-key --group users): the server's users could ask about each other.
    assert affinity.key_problem(regular | 0o640, 0, 110, agent=True, st_gid=115, my_gids=(115,)) == ""
    assert "a group this agent is not in" in affinity.key_problem(regular | 0o640, 0, 110, agent=True,
                                                                   st_gid=100, my_gids=(115,))
    assert affinity.key_problem(regular | 0o640, 0, 110, agent=True, st_gid=0, my_gids=(115,)) == ""
    assert affinity.key_problem(regular | 0o640, 0, 1000, agent=False, st_gid=100, my_gids=(1000,)) == ""
