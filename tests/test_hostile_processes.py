"""The red team's findings against get_hosts as LDM runs it (issue 10), and against the feed's queue and
file as the chooser reads them (issue 22): real processes, real agents.

A hostile host here is a small UDP server in the test: it IS the hostile host of the finding, so
there is no real program to run in its place. A hostile local user is a real process of user nobody
(forked from the test, root dropped) acting on the kernel's own queues and files.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import BIN, COMMUNITY, V3
from snmplb.client import ber
from snmplb.client import snmpcodec
from support import EVIL, GET_HOSTS, IDLE, NOBODY, addrs, as_nobody, drop_queue, get_hosts, hosts_of, lure, \
    plant_queue, report

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

V3_ENV = {"LB_SNMP_VERSION": "3", "LB_SNMP_USER": V3.name, "LB_SNMP_AUTH_PASSPHRASE": V3.auth_pass,
          "LB_SNMP_PRIV_PASSPHRASE": V3.priv_pass}


class Recorder:
    """A UDP socket that records what it receives and, optionally, answers each datagram with ``reply``."""

    def __init__(self, host: str, reply=None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []
        self._reply = reply
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end = time.monotonic() + 120  # bounded, whatever the test does
        while not self._stop.is_set() and time.monotonic() < end:
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            data, peer = self.sock.recvfrom(65535)
            self.received.append(data)
            if self._reply is not None:
                answer = self._reply(data)
                if answer:
                    self.sock.sendto(answer, peer)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _hostile_report(data: bytes) -> bytes | None:
    """Answers an SNMPv3 discovery with a Report whose snmpEngineBoots is out of range."""
    try:
        return report(snmpcodec.v3_parse(data).msg_id, -1, 2**31)
    except ber.BerError:
        return None


def test_a_hostile_v3_report_fails_only_its_own_server(trio):
    hostile = Recorder("127.0.0.61", _hostile_report)
    try:
        r = get_hosts(f"{hostile.address} {addrs(trio)}", LB_ALGORITHM="best", **V3_ENV)
        got = hosts_of(r)
        assert hostile.received, "the hostile host was polled"
        assert sorted(got) == sorted(i.host for i in trio) and "127.0.0.61" not in got
        assert "internal error" not in r.stderr
    finally:
        hostile.stop()


@pytest.mark.parametrize("change,says", [({"LB_SNMP_AUTH_PASSPHRASE": ""}, "needs LB_SNMP_AUTH_PASSPHRASE"),
                                         ({"LB_SNMP_PRIV_PASSPHRASE": "short"}, "needs LB_SNMP_PRIV_PASSPHRASE"),
                                         ({"LB_SNMP_VERSION": "v3"}, "LB_SNMP_VERSION:")])
def test_snmpv3_without_a_passphrase_is_refused_not_downgraded_to_clear_text(change, says):
    listener = Recorder("127.0.0.62")
    try:
        env = {**V3_ENV, **change, "LB_TIMEOUT_MS": "300", "LB_SNMP_COMMUNITY": "community-in-clear"}
        r = get_hosts(f"{listener.address} 127.0.0.63", **env)
        assert hosts_of(r) == ["127.0.0.62", "127.0.0.63"]  # the configured list, so LDM can still try
        assert says in r.stderr and "not polling" in r.stderr
        time.sleep(0.3)
        assert listener.received == []  # not one datagram: no community in clear, no SNMPv3 either
    finally:
        listener.stop()


def _run_bytes(env: dict[bytes, bytes], *, preexec=None) -> subprocess.CompletedProcess:
    full = {b"PATH": os.environb[b"PATH"], b"SNMPLB_PYTHON": os.fsencode(sys.executable), **env}
    return subprocess.run([str(GET_HOSTS)], env=full, capture_output=True, timeout=60, preexec_fn=preexec)


@pytest.mark.parametrize("var", [b"LB_SNMP_COMMUNITY", b"LB_SNMP_AUTH_PASSPHRASE", b"LB_SNMP_PRIV_PASSPHRASE"])
def test_a_latin1_secret_is_named_and_never_shown(trio, var):
    secret = "Kl\u00e9-s\u00e9cr\u00e8te-\u00e6\u00f8\u00e5".encode("latin-1")
    env = {b"LB_SERVERS": os.fsencode(addrs(trio)), b"LB_SNMP_COMMUNITY": b"snmplb-ltsp", b"LB_TIMEOUT_MS": b"500",
           **{k.encode(): v.encode() for k, v in V3_ENV.items()}, var: secret}
    if var == b"LB_SNMP_COMMUNITY":
        env[b"LB_SNMP_VERSION"] = b"2c"
    r = _run_bytes(env)
    assert r.returncode == 0 and r.stdout.count(b"\n") == 1 and r.stdout.strip()
    assert var + b":" in r.stderr and b"internal error" not in r.stderr
    for ch in set(secret):  # not one character that is not plain ASCII text of ours
        if ch >= 0x80:
            assert bytes([ch]) not in r.stderr, ch
    assert b"position" not in r.stderr


def test_a_huge_bad_value_is_cut_in_the_message(trio):
    r = get_hosts(addrs(trio), LB_ALGORITHM="z" * 100000, LB_TIMEOUT_MS="x" * 100000)
    assert len(hosts_of(r)) == 3
    assert "LB_ALGORITHM:" in r.stderr and "LB_TIMEOUT_MS:" in r.stderr and len(r.stderr) < 2000


def test_an_impossible_lbserver_port_is_named_without_a_traceback(trio):
    r = get_hosts(addrs(trio), LB_ALGORITHM="lbserver", LB_LBSERVER_URL="http://127.0.0.1:99999/")
    assert len(hosts_of(r)) == 3
    assert "LB_LBSERVER_URL:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("nofile", [5, 6, 7, 8, 10, 12, 16, 24])
def test_with_file_descriptors_exhausted_one_line_is_printed_and_the_exit_status_is_0(trio, nofile):
    """Python's entry point at every limit it can start with (4 open files or fewer: not even the
    interpreter loads), and the script at every limit its shell can run with (dash needs 12)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = {b"LB_SERVERS": os.fsencode(addrs(trio) + " 127.0.0.1:9"), b"LB_SNMP_COMMUNITY": b"snmplb-ltsp"}
    runs = [subprocess.run([sys.executable, "-I", "-c", "from snmplb.client.gethosts import main_and_exit; main_and_exit()"],
                           env={b"PATH": os.environb[b"PATH"], **env}, capture_output=True, timeout=60,
                           preexec_fn=limit)]
    if nofile >= 12:
        runs.append(_run_bytes(env, preexec=limit))
    for r in runs:
        assert r.returncode == 0, r
        assert r.stdout.count(b"\n") == 1, r
        assert set(r.stdout.split()) <= {i.host.encode() for i in trio} | {b"127.0.0.1"} and r.stdout.split(), r


def test_a_broken_package_still_gives_the_configured_list(tmp_path):
    broken = tmp_path / "python3"
    broken.write_text("#!/bin/sh\necho 'Traceback: ImportError' >&2\nexit 1\n")
    broken.chmod(0o755)
    r = get_hosts("app1 app2:1161 [::1]:161 app1", SNMPLB_PYTHON=str(broken))
    assert hosts_of(r) == ["app1", "app2", "::1"]


_PROBE = """
import os, time
from snmplb.client.deadline import _started_ago, login_deadline
left = login_deadline(3_600_000, os.environ) - time.monotonic()
boot = time.clock_gettime(time.CLOCK_BOOTTIME)
print(left, _started_ago("self", boot), _started_ago(os.getppid(), boot))
"""


def _deadline_probe(argv_prefix: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(time left of a 1 h LB_TIMEOUT_MS, the process's own age, its parent's age), all seen at once."""
    r = subprocess.run([*argv_prefix, sys.executable, "-c", _PROBE], env={"PATH": os.environ["PATH"], **env},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    left, own, parent = map(float, r.stdout.split())
    return left, own, parent


def test_the_deadline_counts_from_the_start_of_the_process_or_of_its_get_hosts_script():
    """Which start the deadline counts from, checked against the ages the process itself reads (10 ms
    clock ticks): nothing here depends on how fast the machine is."""
    hour = 3600.0
    left, own, _ = _deadline_probe([], {})
    assert abs(left - (hour - own)) < 0.05  # alone: from its own start, interpreter start-up included
    # Run by a get_hosts script that names itself: from the script's start (our parent here).
    left, own, parent = _deadline_probe(["sh", "-c", 'SNMPLB_WRAPPER_PID=$$ "$@"; :', "sh"], {})
    assert parent >= own and abs(left - (hour - parent)) < 0.05
    # A PID that is not our parent (this test's own process) is not believed.
    left, own, parent = _deadline_probe(["sh", "-c", '"$@"; :', "sh"], {"SNMPLB_WRAPPER_PID": str(os.getpid())})
    assert abs(left - (hour - own)) < 0.05


def test_sampled_mode_with_a_dead_sample_hedges_to_the_live_servers(fleet):
    live = [fleet.add(f"live{i}", IDLE) for i in range(3)]
    dead = [Recorder(f"127.0.0.7{i}") for i in range(3)]
    try:
        servers = " ".join([d.address for d in dead] + [i.address for i in live])
        for seed in range(12):
            r = get_hosts(servers, LB_SAMPLE="2", LB_SEED=str(seed), LB_TIMEOUT_MS="4000")
            got = hosts_of(r)
            # Whatever was drawn, the live servers come out, and never a silent one; a sample of two dead
            # ones costs the hedge delay, not the whole deadline (the poller's tests time that part).
            assert got and set(got) <= {i.host for i in live}, (seed, got, r.stderr)
    finally:
        for d in dead:
            d.stop()


def _liar_reply(data: bytes) -> bytes | None:
    """A well-formed, authentic-looking v2c answer whose row is legal but absurd: a storm of
    2^32-1 logins/min seen by nobody else, and figures almost 30 s old."""
    from snmplb import mib
    from support import row

    try:
        pdu = snmpcodec.v2c_parse(data, COMMUNITY.encode())
    except ber.BerError:
        return None
    values = {**row(sessions=30, users=0, age=29_999), "lbLoginRate": 2**32 - 1}
    text = mib.encode_row([values[o.name] for o in mib.ROW_FIELDS]).encode()
    vb = ber.enc_seq(ber.enc_seq(ber.enc_oid(mib.ROW.instance), ber.enc_str(text)))
    body = ber.enc_seq(ber.enc_int(pdu.request_id), ber.enc_int(0), ber.enc_int(0), vb, tag=ber.RESPONSE)
    return ber.enc_seq(ber.enc_int(1), ber.enc_str(COMMUNITY.encode()), body)


def test_a_lying_agent_among_real_ones_does_not_steer_the_honest_choices(fleet):
    import random

    from snmplb.client.algorithms import Context, decide
    from snmplb.client.deadline import after
    from snmplb.client.driver import gather
    from snmplb.client.selection import Selection
    from snmplb.lab.fleet import FakeLoad
    from snmplb.client.settings import from_env

    honest = [fleet.add(f"h{n}", FakeLoad(load1=0.4, sessions=(("u", "10.0.0.1"),) * n)) for n in (0, 8, 16, 24)]
    liar = Recorder("127.0.0.65", _liar_reply)
    try:
        settings, problems = from_env({"LB_SERVERS": f"{addrs(honest)} {liar.address}",
                                       "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "3000"})
        assert problems == []
        selection = Selection(settings, random.Random(1))
        states, _, _ = gather(selection, selection.plan(), deadline=after(settings.timeout_ms))
        assert all(s.ok for s in states), [s.reason for s in states]  # the lie passes every check of the row
        assert states[-1].values["lbLoginRate"] == 2**32 - 1

        def firsts(servers) -> dict[str, float]:
            rng = random.Random(5)
            counts: dict[str, int] = {}
            for _ in range(3000):
                h = decide("balanced", servers, Context(settings, rng)).hosts[0]
                counts[h] = counts.get(h, 0) + 1
            return {h: c / 3000 for h, c in counts.items()}

        # Against the same row told honestly (no storm, fresh figures): only the lie differs.
        twin = states[-1]._replace(values={**states[-1].values, "lbLoginRate": 0, "lbDataAge": 500})
        honest_view, lied_view = firsts(states[:-1] + [twin]), firsts(states)
        for inst in honest:
            assert abs(lied_view.get(inst.host, 0.0) - honest_view.get(inst.host, 0.0)) <= 0.03, \
                (inst.host, honest_view, lied_view)
    finally:
        liar.stop()


def test_secrets_from_a_root_only_client_conf_instead_of_lts_conf(trio, tmp_path):
    """lts.conf goes to the whole LAN over TFTP: the secrets can live in the image's own file."""
    conf = tmp_path / "client.conf"
    conf.write_text("# secrets kept out of lts.conf\nLB_SNMP_VERSION = 3\nLB_SNMP_USER = snmplb\n"
                    f"LB_SNMP_AUTH_PASSPHRASE = \"{V3.auth_pass}\"\nexport LB_SNMP_PRIV_PASSPHRASE={V3.priv_pass}\n")
    conf.chmod(0o600)
    r = get_hosts(addrs(trio), LB_ALGORITHM="best", SNMPLB_CLIENT_CONF=str(conf), LB_SNMP_COMMUNITY="wrong")
    assert sorted(hosts_of(r)) == sorted(i.host for i in trio) and hosts_of(r)[-1] == trio[2].host  # SNMPv3 worked
    assert r.stderr == ""
    conf.chmod(0o644)
    r = get_hosts(addrs(trio), SNMPLB_CLIENT_CONF=str(conf))
    assert len(hosts_of(r)) == 3 and "readable by others" in r.stderr and str(conf) in r.stderr
    assert V3.auth_pass not in r.stderr and V3.priv_pass not in r.stderr
    conf.write_text(f"LB_SNMP_COMMUNITY = {V3.auth_pass}\nLB_NOPE = 1\n\xe9\n")
    r = get_hosts(addrs(trio), SNMPLB_CLIENT_CONF=str(conf), LB_SNMP_COMMUNITY="snmplb-ltsp")  # lts.conf wins
    assert len(hosts_of(r)) == 3 and "line 2" in r.stderr and "line 3" in r.stderr
    assert V3.auth_pass not in r.stderr
    for bad in ("/dev/zero", str(tmp_path)):  # never read a device or a directory
        r = get_hosts(addrs(trio), SNMPLB_CLIENT_CONF=bad)
        assert len(hosts_of(r)) == 3 and "not a regular file" in r.stderr


def test_an_empty_lts_conf_variable_does_not_hide_the_client_conf_value(trio, tmp_path):
    conf = tmp_path / "client.conf"
    conf.write_text(f"LB_SNMP_VERSION = 3\nLB_SNMP_AUTH_PASSPHRASE = {V3.auth_pass}\n"
                    f"LB_SNMP_PRIV_PASSPHRASE = {V3.priv_pass}\nLB_SERVERS = {addrs(trio)}\n")
    conf.chmod(0o600)
    r = get_hosts("", SNMPLB_CLIENT_CONF=str(conf), LB_SNMP_PRIV_PASSPHRASE="", LB_ALGORITHM="best")
    assert sorted(hosts_of(r)) == sorted(i.host for i in trio) and r.stderr == ""


def test_the_last_resort_lists_the_servers_of_client_conf(tmp_path):
    from snmplb.client.sources import configured_hosts as _configured

    conf = tmp_path / "client.conf"
    conf.write_text("LB_SERVERS = app1 app2:1161\n")
    assert _configured({"SNMPLB_CLIENT_CONF": str(conf), "SERVER": "srv"}) == "app1 app2"
    assert _configured({"SNMPLB_CLIENT_CONF": str(conf), "LB_SERVERS": "app3"}) == "app3"
    assert _configured({"SNMPLB_CLIENT_CONF": str(tmp_path / "none"), "SERVER": "srv"}) == "srv"


def test_a_root_only_client_conf_is_silently_skipped_for_other_users(tmp_path):
    """`snmplb pick` or `snmplb connect` run by a user cannot read root's client.conf: no line for that."""
    import shutil

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    probe = ("from snmplb.client.clientconf import read_client_conf; import os; "
             "print(read_client_conf({k: v for k, v in os.environ.items()}, frozenset({'LB_SERVERS'})))")
    tmp_path.chmod(0o755)
    conf = tmp_path / "client.conf"
    conf.write_text("LB_SERVERS = app1\n")
    conf.chmod(0o600)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(__import__("snmplb").__path__[0] + "/..")}
    named = subprocess.run(nobody, env={**env, "SNMPLB_CLIENT_CONF": str(conf)}, capture_output=True, text=True,
                           timeout=30)
    assert "Permission denied" in named.stdout  # a file named on purpose: say it cannot be read
    assert subprocess.run([sys.executable, "-c", probe], env={**env, "SNMPLB_CLIENT_CONF": str(conf)},
                          capture_output=True, text=True, timeout=30).stdout.startswith("({'LB_SERVERS': 'app1'}")


# -- issue 22: the feed's queue and file, against another local user ---------------------------------------
#
# The attacker is a real process of another unprivileged user (nobody, forked from the test and stripped of
# root: support.as_nobody), the queue is the kernel's, the feed is the real command. The chooser's and the C
# reader's side: test_chooser.py and test_feed.py.

@pytest.mark.parametrize("owner,mode", [(NOBODY, 0o600), (NOBODY, 0o666), (0, 0o666)],
                         ids=["another-user", "another-user-open-to-all", "root-open-to-all"])
def test_the_feed_refuses_a_queue_someone_else_created_first(fleet, tmp_path, owner, mode):
    from snmplb.login import mqueue

    app = fleet.add("app")
    queue = f"/snmplb-test-taken-{os.getpid()}"
    planted = lure(app.host)
    plant_queue(queue, owner, mode, planted)
    env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500",
           "LB_SERVERS": app.address, "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf")}
    try:
        r = subprocess.run([str(BIN / "snmplb"), "feed", "--queue", queue, "--no-json", "--refresh", "1",
                            "--count", "2", "--idle", "0"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert f"queue {queue}:" in r.stderr and "not the feed's" in r.stderr, r.stderr
        with mqueue.Queue.open(queue) as q:  # left as it was: not taken over, not re-moded, not drained
            st = os.fstat(q.fd)
            assert (st.st_uid, st.st_mode & 0o7777) == (owner, mode)
            assert q.receive() == planted
    finally:
        drop_queue(queue)


def _forged_json() -> str:
    from snmplb.login import feedformat
    from snmplb.login.feedformat import FeedRow, Snapshot

    return feedformat.to_json(Snapshot(int(time.time()), EVIL, (FeedRow(EVIL, "Idle", True, 0.01, 64000, 0, 0.3, ""),)))


@pytest.mark.parametrize("owner,mode", [(NOBODY, 0o755), (0, 0o777), (0, 0o1777)],
                         ids=["another-users-directory", "writable-by-all", "sticky-writable-by-all"])
def test_the_feed_writes_its_json_only_where_nobody_else_may_write(fleet, owner, mode):
    import tempfile
    from pathlib import Path

    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    app = fleet.add("app")
    with tempfile.TemporaryDirectory() as top:  # pytest's tmp_path is not reachable by another user
        os.chmod(top, 0o755)
        run = Path(top) / "run"
        run.mkdir()
        os.chown(run, owner, owner)
        run.chmod(mode)
        out = run / "feed.json"
        forged = _forged_json()
        as_nobody(lambda: out.write_text(forged))  # another user was there first, under the feed's name
        env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500",
               "LB_SERVERS": app.address, "SNMPLB_CLIENT_CONF": str(Path(top) / "none.conf")}
        r = subprocess.run([str(BIN / "snmplb"), "feed", "--no-queue", "--json", str(out), "--count", "1",
                            "--idle", "0"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert f"directory {run}:" in r.stderr and "refusing to write there" in r.stderr, r.stderr
        assert out.read_text() == forged and out.stat().st_uid == NOBODY  # not written, not replaced
        from snmplb.errors import TrustError
        from snmplb.login.feed import read_json

        with pytest.raises(TrustError, match=f"directory {run}:"):  # and a reader does not believe it
            read_json(out)


def test_a_reader_of_the_json_file_believes_only_the_feeds_own_file(fleet, tmp_path):
    from snmplb.errors import TrustError
    from snmplb.login.feed import read_json

    app = fleet.add("app")
    run = tmp_path / "run"
    out = run / "feed.json"
    env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500",
           "LB_SERVERS": app.address, "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf")}
    r = subprocess.run([str(BIN / "snmplb"), "feed", "--no-queue", "--json", str(out), "--count", "1", "--idle", "0"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [row.host for row in read_json(out).rows] == [app.host]  # the feed's own file: believed
    link = run / "link.json"
    link.symlink_to(out)
    with pytest.raises(TrustError, match="symbolic link"):  # not followed, even to the real file
        read_json(link)
    fifo = run / "fifo.json"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(TrustError, match="not a regular file"):  # and no hang on a FIFO
        read_json(fifo)
    out.chmod(0o666)
    with pytest.raises(TrustError, match="mode 0666"):
        read_json(out)
    out.chmod(0o600)
    os.chown(out, NOBODY, NOBODY)  # a file of another user under the name
    with pytest.raises(TrustError, match="owned by uid 65534"):
        read_json(out)
