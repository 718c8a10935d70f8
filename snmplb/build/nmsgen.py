"""Write the NMS files from the MIB: Zabbix 6.0 template, Nagios objects, Icinga 2 config, Prometheus, Grafana.

Every OID in nms/ comes from snmplb.mib (compiled from SNMPLB-MIB), so moving
the MIB's root regenerates them all. Like mibgen, the files are committed and
``--check`` (run by the tests) fails when they are stale:

    python -m snmplb.build.nmsgen            # rewrite nms/zabbix, nagios, icinga2, prometheus, grafana
    python -m snmplb.build.nmsgen --check
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from snmplb import mib
from snmplb.build import promgen
from snmplb.build import promrules

NMS = Path(__file__).resolve().parents[2] / "nms"
TEMPLATE = "SNMPLB LTSP application server by SNMP"
GROUP = "Templates/Applications"
_NS = uuid.UUID("5e1b6a52-9c1e-4c7a-a3c2-3f0b8e6f0c11")

# Labels for people; OIDs, types and units come from the MIB.
LABELS = {
    "lbLoad1": "Load average (1 min)", "lbLoad5": "Load average (5 min)", "lbLoad15": "Load average (15 min)",
    "lbCpuCount": "CPUs online", "lbLoadPerCpu": "Load per CPU (1 min)", "lbMemTotal": "Memory total",
    "lbMemAvailable": "Memory available", "lbMemAvailablePercent": "Memory available, percent",
    "lbSwapTotal": "Swap total", "lbSwapFree": "Swap free", "lbSwapInRate": "Swap-in rate",
    "lbSwapOutRate": "Swap-out rate", "lbSwapInPages": "Pages swapped in since boot",
    "lbSwapOutPages": "Pages swapped out since boot", "lbSwapping": "Swapping", "lbSessions": "Login sessions",
    "lbUsers": "Distinct users", "lbWeight": "Admin weight", "lbMaxSessions": "Maximum sessions",
    "lbAdminState": "Admin state", "lbStatus": "Load-balancing status", "lbRating": "Rating",
    "lbDataAge": "Agent data age", "lbAgentVersion": "Agent version", "lbSessionSource": "Session count source",
    "lbRow": "Row (all values, for thin clients)", "lbInService": "In service for",
    "lbSshConnections": "ssh connections",
    "lbLoginRate": "Login rate", "lbLoginRateSpan": "Login rate span", "lbLoginsConnecting": "Logins connecting",
    "lbSshListening": "sshd listening", "lbLoginPathStatus": "Login paths status",
    "lbLoginPathFree": "Login paths free space (least)", "lbLoginPathFreeInodes": "Login paths free inodes (least)",
    "lbLoginPathProblem": "Login paths problem",
}


def _uuid(*parts: str) -> str:
    """A stable UUID per name, shaped as the UUIDv4 that Zabbix's import requires."""
    return uuid.UUID(bytes=uuid.uuid5(_NS, "/".join(parts)).bytes, version=4).hex


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _oid(name: str) -> str:
    return ".".join(map(str, mib.obj(name).instance))


def _oid_list(names: list[str]) -> str:
    """check_snmp's -o argument: dotted OIDs with a leading dot, comma-separated."""
    return ",".join("." + _oid(n) for n in names)


def _valuemap(o: mib.MibObject) -> str:
    """A value map per textual convention, or per object for an enumeration of its own (lbSshListening)."""
    name: str = o.tc or o.name  # typed for mypy (a record's fields are Any to it)
    return name


def _key(name: str) -> str:
    return f"snmplb.{name}"


def _item(o: mib.MibObject) -> list[str]:
    """One Zabbix item (YAML lines, indented for the template's items list)."""
    value_type, units, pre, delay, history = "UNSIGNED", o.units, [], "1m", "31d"
    if o.hint == "d-2":
        value_type, pre = "FLOAT", [("MULTIPLIER", "0.01")]
    elif o.units == "KiB":
        units, pre = "B", [("MULTIPLIER", "1024")]
    elif o.units == "percent":
        units = "%"
    elif o.units == "milliseconds":
        value_type, units, pre = "FLOAT", "s", [("MULTIPLIER", "0.001")]
    elif o.units == "seconds":
        units = "s"
    if o.base == "OCTET STRING":
        value_type = "TEXT" if o.name == "lbRow" else "CHAR"
        delay, history = ("1m", "1d") if o.name == "lbRow" else ("1h", "31d")
    lines = [
        f"        - uuid: {_uuid('item', o.name)}",
        f"          name: {_q(LABELS.get(o.name, o.name))}",
        "          type: SNMP_AGENT",
        f"          snmp_oid: {_q(_oid(o.name))}",
        f"          key: {_key(o.name)}",
        f"          delay: {delay}",
        f"          history: {history}",
    ]
    if value_type in ("CHAR", "TEXT"):
        lines.append("          trends: '0'")
    lines.append(f"          value_type: {value_type}")
    if units:
        lines.append(f"          units: {_q(units)}")
    lines.append(f"          description: {_q(o.description)}")
    if o.enums:
        lines += ["          valuemap:", f"            name: {_q('SNMPLB ' + _valuemap(o))}"]
    if pre:
        lines.append("          preprocessing:")
        for kind, param in pre:
            lines += [f"            - type: {kind}", "              parameters:", f"                - {_q(param)}"]
    lines += ["          tags:", "            - tag: component", "              value: snmplb"]
    item_triggers = triggers().get(o.name, [])
    if item_triggers:
        lines.append("          triggers:")
        for expr, name, priority in item_triggers:
            lines += [f"            - uuid: {_uuid('trigger', name)}",
                      f"              expression: {_q(expr.format(t=TEMPLATE, k=_key(o.name)))}",
                      f"              name: {_q(name)}",
                      f"              priority: {priority}"]
    return lines


def enum(name: str, label: str) -> int:
    """The number of enumeration ``label`` of object ``name``, from the MIB (never typed by hand)."""
    enums: dict[str, int] = mib.obj(name).enums  # typed for mypy (a record's fields are Any to it)
    if label not in enums:
        raise KeyError(f"{mib.MODULE}::{name} has no enumeration {label!r} (it has {', '.join(enums)})")
    return enums[label]


def enum_range(name: str, *labels: str) -> str:
    """A Nagios range ``low:high`` holding exactly these enumerations of ``name``.

    Raises ValueError when the MIB's numbers for them are not contiguous (the range would also
    hold another state), so a renumbered MIB stops the generator instead of writing a wrong check.
    """
    numbers = [enum(name, label) for label in labels]
    low, high = min(numbers), max(numbers)
    inside = {label for label, n in mib.obj(name).enums.items() if low <= n <= high}
    if inside != set(labels):
        raise ValueError(f"{name}: {sorted(labels)} are not a contiguous range in {mib.MODULE} ({sorted(inside)})")
    return f"{low}:{high}"


def _is(name: str, label: str) -> str:
    """A Zabbix expression: the item's last value is enumeration ``label``."""
    return f"last(/{{t}}/{{k}})={enum(name, label)}"


def triggers() -> dict[str, list[tuple[str, str, str]]]:
    """Zabbix triggers per object: (expression, name, priority). A function: read from the MIB at each call."""
    return {
        "lbSwapping": [(_is("lbSwapping", "true"), "SNMPLB: {HOST.NAME} is swapping", "AVERAGE")],
        "lbLoadPerCpu": [("min(/{t}/{k},5m)>{{$SNMPLB.LOAD.MAX}}",
                          "SNMPLB: load per CPU above {$SNMPLB.LOAD.MAX} for 5 min on {HOST.NAME}", "WARNING")],
        "lbStatus": [(_is("lbStatus", "full"), "SNMPLB: {HOST.NAME} is full (maximum sessions reached)", "WARNING"),
                     (_is("lbStatus", "unavailable"), "SNMPLB: {HOST.NAME} cannot take a login (sshd not "
                                                     "listening or a login path full or hung)", "HIGH"),
                     ("nodata(/{t}/{k},5m)=1", "SNMPLB: no data from {HOST.NAME} for 5 min", "HIGH")],
        "lbAdminState": [(_is("lbAdminState", "draining"), "SNMPLB: {HOST.NAME} is draining", "INFO"),
                         (_is("lbAdminState", "disabled"), "SNMPLB: {HOST.NAME} is disabled", "WARNING")],
        "lbDataAge": [("last(/{t}/{k})>{{$SNMPLB.AGE.MAX}}",
                       "SNMPLB: agent data on {HOST.NAME} older than {$SNMPLB.AGE.MAX} s", "WARNING")],
    }


GRAPHS = {
    "SNMPLB: load": ["lbLoad1", "lbLoad5", "lbLoad15", "lbLoadPerCpu"],
    "SNMPLB: sessions": ["lbSessions", "lbUsers", "lbMaxSessions"],
}
_COLORS = ("1A7C11", "F63100", "2774A4", "A54F10")


def zabbix() -> str:
    out = [
        "# GENERATED from SNMPLB-MIB by `python -m snmplb.build.nmsgen`: do not edit.",
        "# Zabbix 6.0 export format; newer Zabbix servers import it through their converters.",
        "zabbix_export:",
        "  version: '6.0'",
        "  groups:",
        f"    - uuid: {_uuid('group', GROUP)}",
        f"      name: {GROUP}",
        "  templates:",
        f"    - uuid: {_uuid('template', TEMPLATE)}",
        f"      template: {_q(TEMPLATE)}",
        f"      name: {_q(TEMPLATE)}",
        "      description: 'Load, memory, swap, sessions and admin state of an LTSP application server, from "
        "SNMPLB-MIB (snmplb). Needs the snmplb agent on the server and an SNMP interface on the host.'",
        "      groups:",
        f"        - name: {GROUP}",
        "      items:",
    ]
    for o in mib.OBJECTS:
        out += _item(o)
    out += [
        "      macros:",
        "        - macro: '{$SNMPLB.AGE.MAX}'",
        "          value: '10'",
        "          description: 'Agent data older than this (seconds) means the agent is stuck.'",
        "        - macro: '{$SNMPLB.LOAD.MAX}'",
        "          value: '2'",
        "          description: 'Load per CPU above which thin clients stop choosing the server.'",
        "      valuemaps:",
    ]
    seen = set()
    for o in mib.OBJECTS:
        if o.enums and _valuemap(o) not in seen:
            seen.add(_valuemap(o))
            out += [f"        - uuid: {_uuid('valuemap', _valuemap(o))}",
                    f"          name: {_q('SNMPLB ' + _valuemap(o))}",
                    "          mappings:"]
            for label, number in o.enums.items():
                out += [f"            - value: '{number}'", f"              newvalue: {_q(label)}"]
    out.append("  graphs:")
    for name, items in GRAPHS.items():
        out += [f"    - uuid: {_uuid('graph', name)}", f"      name: {_q(name)}", "      graph_items:"]
        for i, item in enumerate(items):
            out.append(f"        - color: {_COLORS[i % len(_COLORS)]}")
            if i:  # the export format leaves out the default sortorder '0'
                out.append(f"          sortorder: '{i}'")
            out += ["          item:", f"            host: {_q(TEMPLATE)}", f"            key: {_key(item)}"]
    return "\n".join(out) + "\n"


def check_snmp() -> list[tuple[str, list[str], str, str, str]]:
    """The check_snmp examples: (command name, objects, warning, critical, labels).

    Thresholds ALWAYS given: check_snmp reports OK for a missing OID when it has none. The
    enumerations' ranges are read from the MIB at each call.
    """
    return [
        ("check_snmplb_load", ["lbLoadPerCpu"], "100", "200", "load_per_cpu_x100"),
        ("check_snmplb_memory", ["lbMemAvailablePercent"], "10:", "5:", "mem_available_pct"),
        # enabled is OK, draining a warning, disabled critical; not swapping (false) is OK.
        ("check_snmplb_admin", ["lbAdminState"], enum_range("lbAdminState", "enabled"),
         enum_range("lbAdminState", "enabled", "draining"), "admin_state"),
        ("check_snmplb_swapping", ["lbSwapping"], enum_range("lbSwapping", "false"), enum_range("lbSwapping", "false"),
         "swapping"),
        ("check_snmplb_overview", ["lbLoadPerCpu", "lbMemAvailablePercent", "lbSwapInRate", "lbSwapOutRate"],
         "100,10:,50,50", "200,5:,500,500", "load_per_cpu_x100,mem_available_pct,swap_in,swap_out"),
    ]


def nagios() -> str:
    out = [
        "# GENERATED from SNMPLB-MIB by `python -m snmplb.build.nmsgen`: do not edit.",
        f"# Nagios 4 objects for snmplb application servers. {promgen.SEE_README}",
        "#",
        "# check_snmplb reads secrets from a file (community = ..., auth_passphrase = ..., priv_passphrase = ...)",
        "# readable by the nagios user only, never from its command line.",
        "",
        "define command {",
        "    command_name    check_snmplb",
        "    command_line    $USER1$/check_snmplb -H $HOSTADDRESS$ --secrets /etc/snmplb/nms-secrets $ARG1$",
        "}",
        "",
        "define command {",
        "    command_name    check_snmplb_v3",
        "    command_line    $USER1$/check_snmplb -H $HOSTADDRESS$ -P 3 -u snmplb --secrets /etc/snmplb/nms-secrets $ARG1$",
        "}",
        "",
        "define service {",
        "    name                    snmplb-service",
        "    use                     generic-service",
        "    service_description     snmplb load balancing",
        "    check_command           check_snmplb",
        "    register                0",
        "}",
        "",
        "# Plain check_snmp (monitoring-plugins) with SNMPLB-MIB's OIDs. check_snmp takes the community on",
        "# its command line ($USER3$ in resource.cfg keeps it out of the object files, not out of `ps`).",
    ]
    for name, objs, warn, crit, labels in check_snmp():
        oids = _oid_list(objs)
        out += ["", "define command {", f"    command_name    {name}",
                f"    command_line    $USER1$/check_snmp -H $HOSTADDRESS$ -P 2c -C $USER3$ -o {oids} "
                f"-l {labels} -w {warn} -c {crit}", "}"]
    return "\n".join(out) + "\n"


def icinga2() -> str:
    args = [("-H", "address"), ("-p", "port"), ("-P", "version"), ("-s", "secrets"), ("-u", "user"),
            ("-a", "auth_protocol"), ("--load-warning", "load_warning"), ("--load-critical", "load_critical"),
            ("--mem-warning", "mem_warning"), ("--mem-critical", "mem_critical"),
            ("--swap-warning", "swap_warning"), ("--swap-critical", "swap_critical"),
            ("--disabled-state", "disabled_state")]
    out = [
        "// GENERATED from SNMPLB-MIB by `python -m snmplb.build.nmsgen`: do not edit.",
        f"// Icinga 2 objects for snmplb application servers. {promgen.SEE_README}",
        "// Hosts opt in with vars.snmplb = true (and vars.snmplb_check_snmp = true for the check_snmp examples).",
        "",
        'object CheckCommand "snmplb" {',
        '  command = [ PluginDir + "/check_snmplb" ]',
        "  arguments = {",
    ]
    for flag, var in args:
        out += [f'    "{flag}" = {{', f'      value = "$snmplb_{var}$"', "    }"]
    out += [
        "  }",
        '  vars.snmplb_address = "$address$"',
        '  vars.snmplb_secrets = "/etc/snmplb/nms-secrets"',
        "}",
        "",
        'apply Service "snmplb" {',
        '  import "generic-service"',
        '  check_command = "snmplb"',
        "  assign where host.vars.snmplb",
        "}",
    ]
    for name, objs, warn, crit, labels in check_snmp():
        oids = _oid_list(objs)
        out += ["", f'apply Service "{name.replace("check_", "")}" {{', '  import "generic-service"',
                '  check_command = "snmp"', f'  vars.snmp_oid = "{oids}"', f'  vars.snmp_label = "{labels}"',
                f'  vars.snmp_warn = "{warn}"', f'  vars.snmp_crit = "{crit}"',
                '  vars.snmp_community = host.vars.snmplb_community',
                "  assign where host.vars.snmplb && host.vars.snmplb_check_snmp", "}"]
    return "\n".join(out) + "\n"


FILES = {"zabbix/snmplb_template.yaml": zabbix, "nagios/snmplb.cfg": nagios, "icinga2/snmplb.conf": icinga2,
         "prometheus/snmp.yml": promgen.snmp_yml_021, "prometheus/snmplb-snmp.yml": promgen.snmplb_snmp_yml,
         "prometheus/generator.yml": promgen.generator_yml, "prometheus/snmplb-rules.yml": promrules.rules_yml,
         "grafana/snmplb-dashboard.json": promrules.dashboard}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snmplb.build.nmsgen", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = ap.parse_args(argv)
    stale = []
    for rel, make in FILES.items():
        path = NMS / rel
        text = make()
        current = path.read_text() if path.exists() else ""
        if current != text:
            stale.append(rel)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"nmsgen: wrote {path}")
    if args.check and stale:
        print(f"nmsgen: stale: {', '.join(stale)}; run python -m snmplb.build.nmsgen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
