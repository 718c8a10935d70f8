"""Table tests of the pure cores: /proc parsers, sessions, health rules, settings files, values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snmplb.agent import config
from snmplb.agent import verdict
from snmplb import mib
from snmplb.adminfile import AdminSettings, parse_admin_bytes, read_admin, render_admin
from snmplb.kvfile import parse_kv, write_atomic
from snmplb.agent.procfs import (ProcError, ProcSample, parse_cpu_count, parse_loadavg, parse_meminfo,
                              parse_vmstat, swap_rates)
from support import make_utmp_record
from snmplb.agent.logins import (SessionCount, count_logind, count_sessions,
                             parse_logind_session, parse_utmp)
from snmplb.agent.values import DataAge, Row, compute_values

MEMINFO = """MemTotal:       16314412 kB
MemFree:         1234567 kB
MemAvailable:    9876543 kB
Buffers:          100000 kB
Cached:          5000000 kB
SwapCached:            0 kB
SwapTotal:       2097148 kB
SwapFree:        1048576 kB
HugePages_Total:       0
"""



def parse_admin(text: str):
    """admin.conf's settings and problems from text, as the agent reads the file's bytes."""
    return parse_admin_bytes(text.encode())

def test_loadavg():
    assert parse_loadavg("0.52 1.03 2.50 2/1234 5678\n") == (0.52, 1.03, 2.5)
    for bad in ("", "a b c", "1.0 2.0", "-1 0 0 1/1 1", "nan 0 0 1/1 1"):
        with pytest.raises(ProcError):
            parse_loadavg(bad)


def test_meminfo_uses_memavailable_and_falls_back_on_old_kernels():
    assert parse_meminfo(MEMINFO) == (16314412, 9876543, 2097148, 1048576)
    old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\n"
    assert parse_meminfo(old) == (1000, 350, 0, 0)
    with pytest.raises(ProcError):
        parse_meminfo("garbage\n")


def test_vmstat_and_cpu_count():
    assert parse_vmstat("nr_free_pages 5\npswpin 123\npswpout 456\n") == (123, 456)
    assert parse_vmstat("nr_free_pages 5\n") == (0, 0)
    stat = "cpu  1 2 3\ncpu0 1 2 3\ncpu1 1 2 3\ncpu3 1 2 3\nintr 5\n"
    assert parse_cpu_count(stat) == 3
    assert parse_cpu_count("intr 5\n") == 1


def _sample(t: float, pin: int, pout: int) -> ProcSample:
    return ProcSample(t, 0, 0, 0, 1, 100, 50, 0, 0, pin, pout)


def test_swap_rates_over_the_window():
    assert swap_rates([], 10) == (0.0, 0.0)
    assert swap_rates([_sample(0, 0, 0)], 10) == (0.0, 0.0)
    hist = [_sample(t, 100 * t, 10 * t) for t in range(0, 21)]
    assert swap_rates(hist, 10) == (100.0, 10.0)
    burst = [_sample(0, 0, 0), _sample(1, 0, 0), _sample(2, 500, 0)]
    assert swap_rates(burst, 10) == (250.0, 0.0)
    assert swap_rates([_sample(0, 1000, 1000), _sample(1, 5, 5)], 10) == (0.0, 0.0)  # counter reset


LOGIND = """# This is private data. Do not parse.
UID=1001
USER=ann
ACTIVE=1
STATE=active
REMOTE=1
TYPE=tty
CLASS=user
REMOTE_HOST=192.168.0.10
SERVICE=sshd
"""


def test_logind_sessions_counts_remote_user_sessions_only():
    ann = parse_logind_session(LOGIND)
    assert ann["USER"] == "ann" and ann["REMOTE"] == "1"
    local = {**ann, "REMOTE": "0"}
    greeter = {**ann, "CLASS": "greeter"}
    closing = {**ann, "STATE": "closing"}
    bob = {**ann, "USER": "bob"}
    assert count_logind([ann, ann, bob, local, greeter, closing]) == SessionCount(3, 2, "logind")


def test_logind_directory_skips_fifos_and_dot_files(tmp_path):
    d = tmp_path / "sessions"
    d.mkdir()
    (d / "1").write_text(LOGIND)
    (d / "2").write_text(LOGIND.replace("ann", "bob"))
    os.mkfifo(d / "1.ref")  # logind keeps these; opening one for reading would block
    os.mkfifo(d / "3")  # even a FIFO without a dot must not block
    (d / "subdir").mkdir()
    assert count_sessions(d, tmp_path / "no-utmp") == SessionCount(2, 2, "logind")


def test_utmp_fallback_when_logind_is_absent(tmp_path):
    utmp = tmp_path / "utmp"
    utmp.write_bytes(make_utmp_record("ann", "10.0.0.1") + make_utmp_record("ann", "10.0.0.2")
                     + make_utmp_record("root", "")  # a local console login
                     + make_utmp_record("bob", "10.0.0.3", ut_type=8)  # DEAD_PROCESS
                     + make_utmp_record("cid", "10.0.0.4") + b"\x01\x02")  # a torn last record
    assert parse_utmp(utmp.read_bytes()) == SessionCount(3, 2, "utmp")
    assert count_sessions(tmp_path / "no-logind", utmp) == SessionCount(3, 2, "utmp")
    assert count_sessions(tmp_path / "no-logind", tmp_path / "nothing") == SessionCount(0, 0, "none")


def _figures(**kw) -> verdict.Figures:
    base = dict(load_per_cpu=50, mem_total=1000, mem_available=500, swapping=False, sessions=5,
                weight=100, max_sessions=0, admin_state="enabled")
    return verdict.Figures(**{**base, **kw})


@pytest.mark.parametrize("changes, status", [
    ({}, "idle"),
    ({"load_per_cpu": 100}, "busy"),
    ({"mem_available": 99}, "busy"),
    ({"swapping": True}, "swapping"),
    ({"swapping": True, "load_per_cpu": 300}, "swapping"),
    ({"max_sessions": 5}, "full"),
    ({"max_sessions": 6}, "idle"),
    ({"max_sessions": 5, "swapping": True}, "full"),
    ({"admin_state": "draining", "max_sessions": 5}, "draining"),
    ({"admin_state": "disabled"}, "disabled"),
])
def test_status_rules_in_order(changes, status):
    assert verdict.server_status(_figures(**changes), verdict.HealthPolicy()) == status


def test_rating_formula():
    rate = lambda **kw: verdict.rating(_figures(**kw), verdict.server_status(_figures(**kw), verdict.HealthPolicy()))
    assert rate(load_per_cpu=0, mem_available=1000) == 100
    assert rate(load_per_cpu=100, mem_available=500) == 50
    assert rate(load_per_cpu=400, mem_available=0) == 1
    assert rate(load_per_cpu=0, mem_available=1000, swapping=True) == 10
    assert rate(max_sessions=5) == 0
    assert rate(admin_state="draining") == 0
    assert rate(weight=0) == 0
    assert verdict.mem_available_percent(0, 0) == 0


def test_kv_files_and_atomic_write(tmp_path):
    pairs, problems = parse_kv("# c\n\nState = 'draining'\nweight=\"50\"\nnonsense line\n= x\n")
    assert pairs == {"state": "draining", "weight": "50"}
    assert len(problems) == 2 and "line 5" in problems[0]
    f = tmp_path / "sub" / "x.conf"
    write_atomic(f, "a = 1\n", mode=0o600)
    assert f.read_text() == "a = 1\n" and (f.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in f.parent.iterdir()] == ["x.conf"]


def test_admin_settings_bad_values_fall_back_and_are_named(tmp_path):
    settings, problems = parse_admin("state = drainng\nweight = 300\nmax_sessions = -4\ncolour = red\n")
    # no valid state line in a file with problems: draining, never enabled by a typo (test_agent_robust)
    assert settings == AdminSettings(state="draining", weight=300, max_sessions=0)
    assert any(p.startswith("state:") for p in problems)
    assert any(p.startswith("max_sessions:") for p in problems)
    assert any("colour" in p for p in problems)
    good = AdminSettings("draining", 250, 40)
    assert parse_admin(render_admin(good)) == (good, [])
    missing = read_admin(tmp_path / "missing")
    assert (missing.settings, list(missing.problems)) == (AdminSettings(), [])


def test_admin_states_are_the_mibs_and_each_is_read_written_and_published():
    """The admin file's states are lbAdminState's labels, in the MIB's order (no list typed by hand):
    each one parses, is rendered (the file's comment names them all) and has the MIB's number in the
    agent's row."""
    from snmplb import adminfile

    labels = tuple(mib.obj("lbAdminState").enums)
    assert adminfile.STATES == labels
    proc = ProcSample(100.0, 1.0, 1.0, 1.0, 2, 1000, 500, 500, 400, 0, 0)
    for state in labels:
        settings = AdminSettings(state=state)
        text = render_admin(settings)
        assert parse_admin(text) == (settings, []) and f"# state: {' | '.join(labels)}\n" in text
        values = compute_values(proc, (0.0, 0.0), SessionCount(0, 0, "logind"), settings, verdict.HealthPolicy())
        assert values["lbAdminState"] == mib.obj("lbAdminState").enums[state]
    _, problems = parse_admin("state = retired\n")
    assert problems == [f"state: 'retired' is not one of: {', '.join(labels)}; not taken"]


def test_agent_config_file_and_overrides(tmp_path):
    f = tmp_path / "agent.conf"
    f.write_text("proc_root = /x/proc\ninterval = 0.2\nbusy_load = lots\nswap_threshold = -5\nfoo = 1\n")
    cfg, problems = config.load(f, {"interval": "0.5", "utmp": "/x/utmp"})
    assert cfg.proc_root == Path("/x/proc") and cfg.utmp == Path("/x/utmp") and cfg.interval == 0.5
    assert cfg.busy_load == 1.0 and cfg.swap_threshold == 50.0
    assert len(problems) == 3 and all(str(f) in p for p in problems)
    cfg, problems = config.load(tmp_path / "none.conf", {})
    assert cfg == config.AgentConfig() and "no such file" in problems[0]
    assert config.load(config.DEFAULT_CONFIG, {})[1] in ([], [])


def test_one_validation_names_the_key_and_falls_back_in_every_settings_file(tmp_path):
    """agent.conf, admin.conf and lts.conf's LB_* variables are checked by one table-driven validation
    (kvfile.validate): the same bad value gets the same words, naming its key and what is used instead
    (admin.conf: only that the line is not taken)."""
    from snmplb.client.settings import from_env

    f = tmp_path / "agent.conf"
    f.write_text("ssh_port = x\ninterval = 0.2\n")
    cfg, agent_problems = config.load(f, {"interval": "fast"})
    assert (cfg.ssh_port, cfg.interval) == (22, 0.2)  # a bad command-line value keeps the file's
    assert agent_problems == [f"{f}: ssh_port: 'x' is not a whole number; using 22",
                              "command line: interval: 'fast' is not a number; using 0.2"]
    _, admin_problems = parse_admin("state = enabled\nweight = x\n")
    # admin.conf's bad line is "not taken", no more: what the server runs on then is the agent's to say (its
    # last good settings, or with none the reading's default), once, not the reading's (issue 21)
    assert admin_problems == ["weight: 'x' is not a whole number; not taken"]
    _, lts_problems = from_env({"LB_SERVERS": "app1", "LB_SNMP_PORT": "x"})
    assert lts_problems == ["LB_SNMP_PORT: 'x' is not a whole number; using the default (161)"]


@pytest.mark.parametrize("table", ["agent", "admin"])
def test_every_field_parses_its_own_default(table):
    """The typed-field tables cover every setting (no type read from an annotation's text): each field's
    parse function turns its documented default back into the dataclass's default value."""
    from dataclasses import fields

    from snmplb import adminfile

    cls, table_fields = (config.AgentConfig, config.FIELDS) if table == "agent" else \
        (AdminSettings, adminfile.FIELDS)
    assert [f.name for f in table_fields] == [f.name for f in fields(cls)]
    for field in table_fields:
        default = getattr(cls(), field.attr)
        parsed = field.parse(field.default)
        assert parsed == default and type(parsed) is type(default), field.name


def test_compute_values_gives_every_object_and_a_consistent_row():
    proc = ProcSample(100.0, 3.0, 2.0, 1.0, 2, 1000, 250, 500, 400, 10, 20)
    values = compute_values(proc, (40.0, 20.0), SessionCount(7, 5, "logind"),
                            AdminSettings("enabled", 150, 0), verdict.HealthPolicy())
    assert set(values) == set(mib.BY_NAME)
    assert values["lbLoadPerCpu"] == 150 and values["lbMemAvailablePercent"] == 25
    assert values["lbSwapping"] == 1 and values["lbStatus"] == mib.obj("lbStatus").enums["swapping"]
    assert values["lbRating"] == 10 and values["lbWeight"] == 150
    assert isinstance(values["lbDataAge"], DataAge) and values["lbDataAge"].at(100.25) == 250
    assert values["lbInService"] == 2**32 - 1  # no uptime, never enabled by the admin: long in service
    row = values["lbRow"]
    assert isinstance(row, Row)
    decoded = mib.decode_row(row.at(100.5))
    assert decoded["lbDataAge"] == 500
    assert all(decoded[k] == values[k] for k in decoded if k != "lbDataAge")


def test_in_service_is_the_later_of_boot_and_the_admins_enable():
    from snmplb.agent.values import in_service

    assert in_service(5000.0, 0, 1_000_000.0) == 5000
    assert in_service(5000.0, 1_000_000 - 60, 1_000_000.0) == 60
    assert in_service(50.0, 1_000_000 - 600, 1_000_000.0) == 50
    assert in_service(None, 1_000_000 - 600, 1_000_000.0) == 600
    assert in_service(5000.0, 1_000_000 + 60, 1_000_000.0) == 0  # clock skew: never negative


def test_established_connections_to_the_ssh_port():
    from snmplb.agent.tcpconns import parse_established, read_ssh

    def read_established(proc_root, port):
        return read_ssh(proc_root, port)[0]

    tcp = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
           "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
           "   1: 0B00A8C0:0016 1400A8C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
           "   2: 0B00A8C0:0016 1500A8C0:9C41 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n"
           "   3: 0B00A8C0:9C42 0100A8C0:0016 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n"
           "   4: 0B00A8C0:0016 1600A8C0:9C43 06 00000000:00000000 00:00000000 00000000     0        0 5 1\n"
           "garbage line\n   5: 0B00A8C0:zz 1600A8C0:9C43 01\n")
    tcp6 = ("  sl  local_address                         remote_address                        st\n"
            "   0: 0000000000000000FFFF00000B00A8C0:0016 0000000000000000FFFF00001700A8C0:9C44 01 0 0 0\n")
    # LISTEN, outbound (remote port 22) and TIME_WAIT do not count
    assert parse_established(tcp, 22) == {"0B00A8C0:0016 1400A8C0:9C40", "0B00A8C0:0016 1500A8C0:9C41"}
    assert len(parse_established(tcp6, 22)) == 1 and parse_established(tcp, 2222) == set()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "net").mkdir()
        assert read_established(Path(d), 22) is None  # no files: unknown, never an error
        (Path(d) / "net" / "tcp").write_text(tcp)
        (Path(d) / "net" / "tcp6").write_text(tcp6)
        assert len(read_established(Path(d), 22)) == 3


def test_login_rate_counts_connections_new_since_the_last_sample_over_ten_seconds():
    from snmplb.agent.tcpconns import LoginRate

    rate = LoginRate(window=10.0)
    assert rate.update(0.0, frozenset({"a", "b", "c"})) == 0  # there when the agent started: not new
    assert rate.update(1.0, frozenset({"a", "b", "c", "d"})) == 6  # one in 10 s: 6 per minute
    assert rate.update(2.0, frozenset({"b", "d", "e", "f"})) == 18  # a left; e and f are new
    assert rate.update(3.0, frozenset({"b", "d", "e", "f"})) == 18  # nothing new: the window still holds 3
    assert rate.update(11.5, frozenset({"b", "d", "e", "f", "g"})) == 18  # d left the window, g came
    assert rate.update(12.0, None) == 6  # the tables could not be read: nothing new; e and f left the window
    assert rate.update(13.0, frozenset({"b", "d", "e", "f", "g"})) == 6  # readable again: nothing counts twice
    assert rate.update(40.0, frozenset()) == 0  # everything aged out


def test_login_rate_span_is_how_much_of_the_window_the_agent_has_watched():
    # lbLoginRateSpan: 0 until the agent has a baseline (just started, or the tables unreadable), then the
    # seconds since it, at most the window: a restarted agent's 0 is "not known yet", not "no logins".
    from snmplb.agent.tcpconns import LoginRate

    rate = LoginRate(window=10.0)
    assert rate.span(0.0) == 0
    rate.update(0.0, None)  # the tables could not be read: still no baseline
    assert rate.span(0.5) == 0
    rate.update(1.0, frozenset({"a"}))  # the baseline
    assert rate.span(1.0) == 0
    rate.update(4.5, frozenset({"a", "b"}))
    assert rate.span(4.5) == 3
    rate.update(30.0, frozenset({"a", "b"}))
    assert rate.span(30.0) == 10


def test_logins_connecting_are_the_new_connections_no_new_session_has_matched():
    # lbLoginsConnecting (issue 23): each new session matches the oldest waiting connection; a waiting
    # connection that closes, or waits 60 s, is dropped; what was there at the baseline is not new.
    from snmplb.agent.tcpconns import Connecting

    c = Connecting(window=60.0)
    assert c.update(0.0, frozenset({"old"}), frozenset({"s0"})) == 0  # the baseline: an rsync, a session
    assert c.update(1.0, frozenset({"old", "a", "b"}), frozenset({"s0"})) == 2  # two logins connecting
    assert c.update(2.0, frozenset({"old", "a", "b", "c"}), frozenset({"s0"})) == 3
    assert c.update(3.0, frozenset({"old", "a", "b", "c"}), frozenset({"s0", "s1"})) == 2  # a's session
    assert c.update(4.0, frozenset({"old", "a", "c"}), frozenset({"s0", "s1"})) == 1  # b gave up (closed)
    assert c.update(5.0, None, frozenset({"s0", "s1"})) == 1  # tables unreadable: nothing known to change
    # 20 s later still no session for c (a slow login): it still counts, then a session comes.
    assert c.update(25.0, frozenset({"old", "a", "c"}), frozenset({"s0", "s1"})) == 1
    assert c.update(26.0, frozenset({"old", "a", "c", "d"}), frozenset({"s1", "s2"})) == 1  # s0 left, s2 is c's
    # d never becomes a session (an sftp): it counts for 60 s, then no more.
    assert c.update(85.0, frozenset({"old", "a", "c", "d"}), frozenset({"s1", "s2"})) == 1
    assert c.update(86.0, frozenset({"old", "a", "c", "d"}), frozenset({"s1", "s2"})) == 0
    assert c.update(87.0, frozenset({"old", "a", "c", "d"}), frozenset({"s1", "s2", "s3"})) == 0  # none waits
    # A connection that opens and becomes a session between two samples: both new at once, nothing waits.
    assert c.update(88.0, frozenset({"old", "a", "c", "d", "e"}), frozenset({"s1", "s2", "s3", "s4"})) == 0


def _memory_after_a_long_run(sample, start: int) -> tuple[int, int]:
    """Traced memory after 1 000 samples (one a second from ``start``: ``sample(t)``) and after 20 000 more:
    what an agent's tracker holds must not grow with the samples it has seen (it runs for months)."""
    import tracemalloc

    tracemalloc.start()
    try:
        def run(first: int, count: int) -> int:
            for t in range(first, first + count):
                sample(t)
            return tracemalloc.get_traced_memory()[0]

        return run(start, 1_000), run(start + 1_000, 20_000)
    finally:
        tracemalloc.stop()


def test_logins_connecting_before_the_tables_are_readable_and_memory_stays_bounded():
    from snmplb.agent.tcpconns import Connecting

    c = Connecting(window=60.0)
    assert c.update(0.0, None, frozenset({"s0"})) == 0  # no baseline yet
    assert c.update(1.0, frozenset({"a", "b"}), frozenset({"s0", "s1"})) == 0  # the baseline: not new
    settled, later = _memory_after_a_long_run(  # a connection a second that never becomes a session
        lambda t: c.update(float(t), frozenset({f"c{t}", f"c{t - 1}", "a"}), frozenset({"s0"})), 2)
    assert later < settled + 64 * 1024


def test_session_counts_name_each_session_so_a_new_one_shows():
    # tcpconns.Connecting tells new sessions by their identities: logind's session file names, utmp's pid,
    # line and login time; the count's equality ignores them.
    import tempfile
    from pathlib import Path

    from snmplb.lab.fleet import write_fake_sessions

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "sessions"
        write_fake_sessions(d, (("ann", "h1"),))
        first = count_sessions(d, Path(tmp) / "no-utmp")
        write_fake_sessions(d, (("ann", "h1"), ("bob", "h2")))
        second = count_sessions(d, Path(tmp) / "no-utmp")
        assert len(first.ids) == 1 and first.ids < second.ids and len(second.ids) == 2
        # A session that did not come over ssh (xrdp's sesman registers its own) is counted, but matches
        # no ssh connection: it has no id here.
        xrdp = (d / "2").read_text().replace("SERVICE=sshd", "SERVICE=xrdp-sesman")
        (d / "2").write_text(xrdp)
        third = count_sessions(d, Path(tmp) / "no-utmp")
        assert third.sessions == 2 and third.ids == first.ids
        utmp = Path(tmp) / "utmp"
        utmp.write_bytes(make_utmp_record("ann", "h1", "pts/0", 10) + make_utmp_record("ann", "h1", "pts/1", 11))
        one = count_sessions(Path(tmp) / "no-logind", utmp)
        utmp.write_bytes(make_utmp_record("ann", "h1", "pts/1", 11) + make_utmp_record("bob", "h2", "pts/0", 12))
        two = count_sessions(Path(tmp) / "no-logind", utmp)
        assert one.sessions == two.sessions == 2 and len(two.ids - one.ids) == 1


def test_login_rate_memory_stays_bounded_over_a_long_run():
    """The agent runs for months: what LoginRate holds must not grow with the samples it has seen."""
    from snmplb.agent.tcpconns import LoginRate

    rate = LoginRate(window=10.0)
    settled, later = _memory_after_a_long_run(  # one new connection a second
        lambda t: rate.update(float(t), frozenset({f"c{t}", f"c{t + 1}"})), 0)
    assert rate.update(21_000.0, frozenset({"c20999", "c21000", "x"})) == 60  # still counting: one a second
    assert later - settled < 16_384, (settled, later)  # 20 000 more samples, no more memory
