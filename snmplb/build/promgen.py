"""SNMPLB-MIB as Prometheus metrics: the snmp_exporter module and the generator.yml for it.

Metric names, types, help texts and enumerations come from snmplb.mib (compiled
from SNMPLB-MIB), like every other NMS file; ``python -m snmplb.build.nmsgen`` writes:

- nms/prometheus/snmplb-snmp.yml: a config file of its own for snmp_exporter 0.24
  and later, which take several ``--config.file``: the site's snmp.yml stays as it
  is and this one is the second file. It has ``auths:`` apart from ``modules:``
  (0.30 refuses a configuration without auths) and the scrape names both
  (``&module=snmplb&auth=snmplb_v2c``). Tested against Debian 13's
  exporter and Debian unstable's (the archive's newest).
- nms/prometheus/snmp.yml: the same module in the format snmp_exporter 0.21/0.22
  read (Debian 12's prometheus-snmp-exporter 0.21.0): module names at the top level,
  ``auth`` inside each module (v3 is a module of its own). Those versions read a
  single config file, so this one is appended to the site's snmp.yml. Tested too.
- nms/prometheus/generator.yml: for sites that run upstream's (Go) generator
  (its current format, with ``auths:``, ``name`` and ``scale`` overrides). Our own
  Python code writes the modules above from the same MIB data.

Why the loads are regex extracts: SnmplbLoad is the load times 100 (DISPLAY-HINT
d-2); snmp_exporter learnt ``scale`` only in 0.25. A regex over the integer's
decimal text ("150" -> "1.50") gives the real number in every version, under
the same name, so the rules and the dashboard work with both files.
"""

from __future__ import annotations

import json
import re

from snmplb import mib

# Where the generated files' headers send a reader: the files are installed (snmplb-nms, /usr/share/snmplb/nms)
# with their README, and used from a checkout too.
SEE_README = "See /usr/share/doc/snmplb-nms/README.md.gz (nms/README.md in snmplb's source)."

# Placeholders, replaced at deploy time (nms/README.md): no secret is ever in the repository.
COMMUNITY_PLACEHOLDER = "SNMPLB_COMMUNITY_FROM_SECRETS_FILE"
AUTH_PLACEHOLDER = "SNMPLB_AUTH_PASSPHRASE_FROM_SECRETS_FILE"
PRIV_PLACEHOLDER = "SNMPLB_PRIV_PASSPHRASE_FROM_SECRETS_FILE"
V3_USER = "snmplb"
MODULE = "snmplb"
MODULE_V3 = "snmplb_v3"  # snmp.yml (0.21/0.22): v3 is a module of its own
AUTH = "snmplb_v2c"  # snmplb-snmp.yml (0.24+): one module, an auth per SNMP version
AUTH_V3 = "snmplb_v3"

# Objects not exported: lbRow repeats every number for thin clients (one GET at login).
SKIPPED = frozenset({"lbRow"})
# Enumerations that describe a setup rather than a state: one info series instead of a state set.
INFO_ENUMS = frozenset({"lbSessionSource"})
# Prometheus unit suffixes for the MIB's UNITS clauses (base units where the value is not scaled).
_UNIT_SUFFIX = {
    "KiB": "kibibytes", "MiB": "mebibytes", "percent": "percent", "milliseconds": "milliseconds",
    "seconds": "seconds", "pages/s": "pages_per_second", "logins per minute": "per_minute",
}
# Names people read better than the mechanical ones.
_RENAMES = {"lbCpuCount": "cpus", "lbSwapInRate": "swap_in", "lbSwapOutRate": "swap_out",
            "lbLoginRate": "logins", "lbMemAvailablePercent": "mem_available",
            "lbLoginPathFreeInodes": "login_path_free_inodes", "lbAgentVersion": "agent_version"}
# "150" -> 1.50: hundredths as decimal text (snmp_exporter anchors each regex itself).
_HUNDREDTHS = [{"regex": "([0-9]+)([0-9]{2})", "value": "$1.$2"},
               {"regex": "([0-9]{2})", "value": "0.$1"},
               {"regex": "([0-9])", "value": "0.0$1"}]


def exported() -> tuple[mib.MibObject, ...]:
    """The MIB's objects that become metrics, in OID order."""
    return tuple(o for o in mib.OBJECTS if o.name not in SKIPPED)


def metric_name(o: mib.MibObject) -> str:
    """The Prometheus name of an object: snmplb_, snake case, the unit last (``_total`` for counters)."""
    base = _RENAMES.get(o.name) or re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", o.name[2:]).lower()
    suffix = _UNIT_SUFFIX.get(o.units, "")
    name = f"snmplb_{base}"
    if suffix and not name.endswith("_" + suffix):
        name += "_" + suffix
    if o.base.startswith("Counter"):
        name += "_total"
    return name


def metric_type(o: mib.MibObject) -> str:
    """snmp_exporter's type for an object (the loads are strings to it: see the module docstring)."""
    if o.enums:
        return "EnumAsInfo" if o.name in INFO_ENUMS else "EnumAsStateSet"
    if o.base == "OCTET STRING" or o.hint == "d-2":
        return "DisplayString"
    return "counter" if o.base.startswith("Counter") else "gauge"


def _help(o: mib.MibObject) -> str:
    text = " ".join(o.description.split())
    return text + " Exported divided by 100: the real number." if o.hint == "d-2" else text


def _metric(o: mib.MibObject) -> dict[str, object]:
    m: dict[str, object] = {"name": metric_name(o), "oid": ".".join(map(str, o.oid)), "type": metric_type(o),
                            "help": _help(o)}
    if o.enums:
        m["enum_values"] = {number: label for label, number in o.enums.items()}
    if o.hint == "d-2":
        m["regex_extracts"] = {"": _HUNDREDTHS}  # the empty suffix keeps the metric's own name
    return m


def _module_body() -> dict[str, object]:
    return {"get": [".".join(map(str, o.instance)) for o in exported()],
            "metrics": [_metric(o) for o in exported()]}


_WALK = {"max_repetitions": 25, "retries": 2, "timeout": "5s"}
_V2C = {"community": COMMUNITY_PLACEHOLDER}
_V3 = {"username": V3_USER, "security_level": "authPriv", "password": AUTH_PLACEHOLDER, "auth_protocol": "SHA",
       "priv_protocol": "AES", "priv_password": PRIV_PLACEHOLDER}
_HEADER = (f"# GENERATED from SNMPLB-MIB by `python -m snmplb.build.nmsgen`: do not edit. {SEE_README}\n"
           "# The *_FROM_SECRETS_FILE placeholders are replaced at deploy time; never commit the result.\n")


def snmp_yml_021() -> str:
    """The modules for snmp_exporter 0.21/0.22 (Debian 12): auth and version inside each module."""
    body = _module_body()
    doc = {MODULE: {**body, "version": 2, **_WALK, "auth": _V2C},
           MODULE_V3: {**body, "version": 3, **_WALK, "auth": _V3}}
    return (_HEADER + "# Format: snmp_exporter 0.21 and 0.22 (module names at the top, auth per module). They read\n"
            "# ONE config file: append this one to the site's /etc/prometheus/snmp.yml (nms/README.md).\n"
            "# Scrape with &module=snmplb (v3: &module=snmplb_v3). 0.24 and later: snmplb-snmp.yml.\n"
            + to_yaml(doc))


def snmplb_snmp_yml() -> str:
    """The module for snmp_exporter 0.24 and later, a config file of its own: ``auths:`` apart from ``modules:``."""
    doc = {"auths": {AUTH: {**_V2C, "version": 2}, AUTH_V3: {**_V3, "version": 3}},
           "modules": {MODULE: {**_module_body(), **_WALK}}}
    return (_HEADER + "# Format: snmp_exporter 0.24 and later (auths apart from modules). A config file of its own:\n"
            "# give it with a second --config.file after the site's snmp.yml, which stays as it is.\n"
            f"# Scrape with &module={MODULE}&auth={AUTH} (v3: &auth={AUTH_V3}).\n"
            + to_yaml(doc))


def generator_yml() -> str:
    """Input for upstream's Go generator (its current format), for sites that generate their own snmp.yml."""
    overrides = {}
    for o in exported():
        ov: dict[str, object] = {"name": metric_name(o)}
        if o.hint == "d-2":
            ov["scale"] = 0.01  # upstream 0.25+; our own files use the regex extracts (module docstring)
        elif o.enums:
            ov["type"] = metric_type(o)
        overrides[o.name] = ov
    doc = {"auths": {AUTH: {**_V2C, "version": 2}, AUTH_V3: {**_V3, "version": 3}},
           "modules": {MODULE: {"walk": [o.name for o in exported()], **_WALK, "overrides": overrides}}}
    return (f"# GENERATED from SNMPLB-MIB by `python -m snmplb.build.nmsgen`: do not edit. {SEE_README}\n"
            "# For upstream snmp_exporter's generator (0.25 or later: `name` and `scale` overrides),\n"
            "# run with SNMPLB-MIB.txt on its MIB path. snmplb's own generator writes snmp.yml without it.\n"
            + to_yaml(doc))


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", text) and text not in ("true", "false", "null", "yes", "no",
                                                                         "on", "off", "y", "n"):
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def to_yaml(value: object, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (the few shapes these files use)."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = _scalar(k)
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{key}:\n{to_yaml(v, indent + 2)}")
            else:
                out.append(f"{pad}{key}: {_scalar(v) if not isinstance(v, (dict, list)) else json.dumps(v)}\n")
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                out.append(f"{pad}- {inner[indent + 2:]}")
            else:
                out.append(f"{pad}- {_scalar(v)}\n")
    else:
        out.append(f"{pad}{_scalar(value)}\n")
    return "".join(out)
