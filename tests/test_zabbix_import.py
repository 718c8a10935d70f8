"""Import the Zabbix template into a real Zabbix 6.0 (Debian 12's), through its API.

The import API lives in Zabbix's PHP frontend, so the test runs, all in its
own temporary directory and on loopback: a private PostgreSQL cluster with
Zabbix's schema and data, and a copy of the frontend (Debian's reads its
config from a fixed /etc path, which the copy points at the test's own file)
served by PHP's built-in web server. Skipped where the packages are missing.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from snmplb import mib
from snmplb.build import nmsgen
from snmplb.lab.fleet import PROJECT

PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=Path("/nonexistent"))
SCHEMA = Path("/usr/share/zabbix-server-pgsql")
FRONTEND = Path("/usr/share/zabbix")
pytestmark = [pytest.mark.fleet, pytest.mark.skipif(
    not (PG_BIN.exists() and (SCHEMA / "schema.sql.gz").exists() and FRONTEND.exists() and shutil.which("php")),
    reason="postgresql, zabbix-server-pgsql, zabbix-frontend-php, php-cli and php-pgsql are needed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.fixture
def zabbix_api(tmp_path):
    # PostgreSQL refuses to run as root and its user cannot enter pytest's private tmp tree.
    pgdata, port = Path(tempfile.mkdtemp(prefix="snmplb-pg-")), _free_port()
    shutil.chown(pgdata, "postgres", "postgres")
    pgdata.chmod(0o700)
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(pgdata), "-U", "postgres", "-A", "trust", "-E", "UTF8")
    _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-l", str(pgdata / "log"), "-w", "-o",
                 f"-p {port} -k {pgdata} -c listen_addresses=127.0.0.1", "start")
    php = None
    try:
        psql = [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q",
                "-v", "ON_ERROR_STOP=1"]
        _as_postgres(*psql, "-c", "CREATE DATABASE zabbix")
        for part in ("schema", "images", "data"):
            sql = gzip.decompress((SCHEMA / f"{part}.sql.gz").read_bytes()).decode()
            _as_postgres(*psql, "-d", "zabbix", input=sql)
        web = tmp_path / "frontend"
        shutil.copytree(FRONTEND, web, symlinks=True)
        conf = tmp_path / "zabbix.conf.php"
        conf.write_text(f"""<?php
$DB['TYPE'] = 'POSTGRESQL'; $DB['SERVER'] = '127.0.0.1'; $DB['PORT'] = '{port}';
$DB['DATABASE'] = 'zabbix'; $DB['USER'] = 'postgres'; $DB['PASSWORD'] = ''; $DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false; $DB['KEY_FILE'] = ''; $DB['CERT_FILE'] = ''; $DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false; $DB['CIPHER_LIST'] = ''; $DB['VAULT_URL'] = ''; $DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = ''; $DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER_NAME = 'snmplb-test';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
""")
        core = web / "include/classes/core/CConfigFile.php"
        core.write_text(core.read_text().replace("'/etc/zabbix/zabbix.conf.php'", repr(str(conf))))
        http_port = _free_port()
        php = subprocess.Popen(["php", "-S", f"127.0.0.1:{http_port}", "-t", str(web)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{http_port}/api_jsonrpc.php"

        def call(method: str, params: dict, auth: str | None = None) -> object:
            body = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
            if auth:
                body["auth"] = auth
            req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json-rpc"})
            with urllib.request.urlopen(req, timeout=60) as r:
                answer = json.loads(r.read())
            if "error" in answer:
                raise AssertionError(f"{method}: {answer['error']}")
            return answer["result"]

        end = time.monotonic() + 30
        while True:
            try:
                call("apiinfo.version", {})
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        version = call("apiinfo.version", {})
        if not version.startswith("6.0."):
            pytest.skip(f"this Zabbix is {version}; the template targets 6.0's import format (newer ones convert it)")
        token = call("user.login", {"username": "Admin", "password": "zabbix"})
        yield lambda method, params: call(method, params, token)
    finally:
        if php:
            php.terminate()
            php.wait(10)
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "stop")
        shutil.rmtree(pgdata, ignore_errors=True)


def test_the_template_imports_into_zabbix_60_with_every_item_trigger_and_graph(zabbix_api):
    source = (PROJECT / "nms/zabbix/snmplb_template.yaml").read_text()
    rules = {kind: {"createMissing": True, "updateExisting": True}
             for kind in ("templates", "items", "triggers", "graphs", "valueMaps", "groups")}
    assert zabbix_api("configuration.import", {"format": "yaml", "source": source, "rules": rules}) is True
    (tpl,) = zabbix_api("template.get", {"filter": {"host": nmsgen.TEMPLATE}, "selectItems": "extend",
                                         "selectTriggers": "extend", "selectGraphs": "extend",
                                         "selectMacros": "extend", "selectValueMaps": "extend"})
    by_oid = {it["snmp_oid"]: it for it in tpl["items"]}
    assert len(by_oid) == len(mib.OBJECTS)
    for o in mib.OBJECTS:
        assert by_oid[".".join(map(str, o.instance))]["key_"] == f"snmplb.{o.name}"
    assert len(tpl["triggers"]) == sum(len(v) for v in nmsgen.triggers().values())
    assert {g["name"] for g in tpl["graphs"]} == set(nmsgen.GRAPHS)
    assert {m["macro"] for m in tpl["macros"]} == {"{$SNMPLB.AGE.MAX}", "{$SNMPLB.LOAD.MAX}"}
    assert {vm["name"] for vm in tpl["valuemaps"]} == {"SNMPLB " + (o.tc or o.name) for o in mib.OBJECTS if o.enums}
