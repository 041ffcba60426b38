"""The network rules opskit writes, under a real systemd: enforced, and the database app works.

Every address here is one the test adds to the loopback of the container's own network
namespace (nspawn's --private-network): no traffic leaves it. The container has
``--system-call-filter=bpf``, so systemd enforces IPAddressDeny= with its cgroup filter.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from opskit.errors import SpecError
from opskit.spec import build_spec
from opskit.systemd.network import network_needs
from opskit.systemd.units import render_units
from tests.real_systemd import corpus

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

ALLOWED = "192.0.2.10"
DENIED = "192.0.2.20"
PORT = 9000
#: How long the probe's connect waits: a denied connect is not refused but times out.
CONNECT_TIMEOUT = 3.0

LISTENERS = textwrap.dedent(
    """\
    import socket, sys, threading
    def serve(host, port):
        s = socket.create_server((host, port))
        while True:
            conn, _ = s.accept()
            conn.close()
    for item in sys.argv[1:]:
        host, port = item.rsplit(":", 1)
        threading.Thread(target=serve, args=(host, int(port)), daemon=True).start()
    threading.Event().wait()
    """
)

# Run as the service: connect to each target, then one UDP datagram to each, and report.
PROBE = textwrap.dedent(
    """\
    import errno, json, socket, sys, time
    timeout = float(sys.argv[1])
    results = {}
    for target in sys.argv[2:]:
        host, port = target.rsplit(":", 1)
        tcp = socket.socket(socket.AF_INET)
        tcp.settimeout(timeout)
        started = time.monotonic()
        try:
            tcp.connect((host, int(port)))
            verdict = "connected"
        except socket.timeout:
            verdict = "timeout"
        except OSError as exc:
            verdict = errno.errorcode.get(exc.errno, str(exc.errno))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.sendto(b"x", (host, int(port)))
            sent = "sent"
        except OSError as exc:
            sent = errno.errorcode.get(exc.errno, str(exc.errno))
        results[target] = [verdict, round(time.monotonic() - started, 2), sent]
    print("PROBE " + json.dumps(results), flush=True)
    time.sleep(3600)
    """
)


def _probe_result(box, unit: str) -> dict[str, list]:
    def reported() -> bool:
        return "PROBE " in box.run("journalctl", "--no-pager", "-u", unit, "-o", "cat").stdout

    box.wait_for(f"{unit}'s probe", reported, timeout=60)
    log = box.run("journalctl", "--no-pager", "-u", unit, "-o", "cat").stdout
    line = next(line for line in log.splitlines() if line.startswith("PROBE "))
    result: dict[str, list] = json.loads(line.removeprefix("PROBE "))
    return result


def _probe_spec(name: str, **hardening: object):
    targets = [f"{ALLOWED}:{PORT}", f"{DENIED}:{PORT}", f"127.0.0.1:{PORT + 1}"]
    return build_spec(
        {
            "name": name,
            "server": "command",
            "command": ["/usr/bin/python3", "/opt/probe/probe.py", str(CONNECT_TIMEOUT), *targets],
            "working_directory": "/opt/probe",
            "hardening": hardening,
        }
    )


def test_the_allow_list_is_enforced(boot, measure):
    box = boot("net-allow", app=False)
    for address in (ALLOWED, DENIED):
        box.run("ip", "address", "add", f"{address}/32", "dev", "lo")
    box.write_file("/opt/probe/probe.py", PROBE)
    box.write_file("/opt/probe/listeners.py", LISTENERS)
    box.run(
        *("systemd-run", "--unit=listeners", "/usr/bin/python3", "/opt/probe/listeners.py"),
        *(f"{ALLOWED}:{PORT}", f"{DENIED}:{PORT}", f"127.0.0.1:{PORT + 1}"),
    )
    # Outside any sandbox every listener answers: what the service misses is filtered.
    check = (
        "import socket, sys\n"
        "for t in sys.argv[1:]:\n"
        "    h, p = t.rsplit(':', 1); socket.create_connection((h, int(p)), timeout=5).close()\n"
    )
    box.wait_for(
        "the listeners",
        lambda: (
            box.python(
                "-c",
                check,
                f"{ALLOWED}:{PORT}",
                f"{DENIED}:{PORT}",
                f"127.0.0.1:{PORT + 1}",
                check=False,
            ).returncode
            == 0
        ),
        timeout=30,
    )

    allowed = _probe_spec("probe-allow", ip_address_allow=[ALLOWED])
    units = render_units(allowed)
    assert f"IPAddressAllow=localhost {ALLOWED}\nIPAddressDeny=any\n" in units[0].content
    box.install_units(units)
    box.systemctl("start", "probe-allow.service")
    result = _probe_result(box, "probe-allow.service")
    assert result[f"{ALLOWED}:{PORT}"][0] == "connected", result
    assert result[f"127.0.0.1:{PORT + 1}"][0] == "connected", result
    # Denied: no refusal, no EPERM: the SYNs are dropped and the client waits its timeout.
    verdict, seconds, udp = result[f"{DENIED}:{PORT}"]
    assert verdict == "timeout" and seconds >= CONNECT_TIMEOUT - 0.5, result
    # A datagram to it fails at once, with EPERM.
    assert udp == "EPERM", result
    assert result[f"{ALLOWED}:{PORT}"][2] == "sent", result
    measure(f"network: IPAddressDeny=any, probe as the service: {json.dumps(result)}")

    # The same unit without the entry: the allowed address is denied too. The entry, not
    # anything else of the sandbox, is what let it through.
    default = _probe_spec("probe-default")
    box.install_units(render_units(default))
    box.systemctl("start", "probe-default.service")
    result = _probe_result(box, "probe-default.service")
    assert result[f"{ALLOWED}:{PORT}"][0] == "timeout", result
    assert result[f"127.0.0.1:{PORT + 1}"][0] == "connected", result


# --- the database app of the corpus ------------------------------------------------------------

REMOTE = "10.10.0.5"


def _connections(box, host: str) -> int:
    """How many connections PostgreSQL has logged from ``host`` ("[local]": its socket)."""
    log = box.run("journalctl", "--no-pager", "-u", corpus.PG_UNIT, "-o", "cat").stdout
    return log.count(f"connection received: host={host}")


def _serve_db(box, spec, project: Path, expect_host: str) -> None:
    """Render the units as opskit decides, start them, query the database, stop them."""
    decision = network_needs(spec, project)
    box.install_units(render_units(spec, decision))
    unit = f"{spec.name}.socket" if spec.socket else f"{spec.name}.service"
    seen = _connections(box, expect_host)
    box.systemctl("start", unit)
    try:
        corpus.wait_serving(box, corpus.DBAPP, timeout=60)
        status, body = corpus.http_json(box, corpus.DBAPP.url())
        assert (status, body.get("result")) == (200, 1), body
        # The server saw this app connect the way its URL says.
        assert _connections(box, expect_host) > seen
    except Exception:
        print(box.journal(f"{spec.name}.service", lines=60))
        raise
    finally:
        box.systemctl("stop", f"{spec.name}.service", *([f"{spec.name}.socket"] * spec.socket))


def test_the_database_app_works_as_the_decision_says(corpus_boot, corpus_dir: Path, measure):
    box = corpus_boot("net-dbapp")
    corpus.add_address(box, REMOTE)
    db = corpus.start_postgres(box, listen=("127.0.0.1", REMOTE))
    project = corpus_dir / "dbapp"

    def spec(name: str, url: str, **raw: object):
        return corpus.DBAPP.spec("gunicorn", name=name, environment={"DATABASE_URL": url}, **raw)

    # TCP on 127.0.0.1, no socket unit: inside IPAddressAllow=localhost already.
    tcp = spec("db-tcp", db.tcp_url)
    decision = network_needs(tcp, project)
    assert decision.mode == "deny" and decision.allow == ("localhost",)
    assert "DATABASE_URL: 127.0.0.1 is allowed (IPAddressAllow=localhost)" in decision.notes
    _serve_db(box, tcp, project, "127.0.0.1")

    # The unix socket, with and without a socket unit (PrivateNetwork=yes, AF_UNIX only).
    for socket in (False, True):
        unix = spec(f"db-unix-{int(socket)}", db.unix_url, socket=socket)
        assert network_needs(unix, project).mode == ("private" if socket else "deny")
        _serve_db(box, unix, project, "[local]")

    # TCP with a socket unit is refused, naming the fixes; the allow list it names works,
    # and the socket passed in still serves under that service's IPAddressDeny=any.
    with pytest.raises(SpecError, match=r"--ip-address-allow 127\.0\.0\.1"):
        render_units(spec("db-tcp-socket", db.tcp_url, socket=True))
    fixed = spec(
        "db-tcp-socket", db.tcp_url, socket=True, hardening={"ip_address_allow": ["127.0.0.1"]}
    )
    assert "IPAddressAllow=127.0.0.1\n" in render_units(fixed)[0].content
    _serve_db(box, fixed, project, "127.0.0.1")

    # A database at another address: allowed because the URL names it.
    remote = spec("db-remote", db.url_at(REMOTE))
    decision = network_needs(remote, project)
    assert decision.allow == ("localhost", REMOTE)
    assert f"IPAddressAllow={REMOTE}: DATABASE_URL connects to it" in decision.notes
    _serve_db(box, remote, project, REMOTE)
    # ... and denied where opskit cannot see the URL (an environment file, read by systemd
    # only): the default profile then drops the SYNs, and the route fails after psycopg's
    # own connect timeout, with nothing of a denial in the journal.
    box.write_file("/etc/db-hidden.env", f"DATABASE_URL={db.url_at(REMOTE)}\n")
    hidden = corpus.DBAPP.spec("gunicorn", name="db-hidden", environment_file="/etc/db-hidden.env")
    decision = network_needs(hidden, project)
    assert decision.allow == ("localhost",)
    # What opskit can say: the dependency, without a URL to go by.
    assert any(n.startswith("warning: psycopg (a PostgreSQL client)") for n in decision.notes)
    box.install_units(render_units(hidden, decision))
    box.systemctl("start", "db-hidden.service")
    box.wait_http(corpus.DBAPP.url("/"), timeout=60)
    started = time.monotonic()
    status, body = corpus.http_json(box, corpus.DBAPP.url(), timeout=30)
    assert status == 500 and "timeout" in body["error"], body
    measure(
        f"network: denied database, /db answered 500 after "
        f"{time.monotonic() - started:.1f} s: {body['error']}"
    )
    assert "EPERM" not in box.journal("db-hidden.service")
    # doctor reads the journal of the unit and names the denial, with the fix.
    done = corpus.opskit(
        box,
        "doctor",
        "db-hidden",
        *corpus.DBAPP.cli_args("gunicorn"),
        *("--env-file", "/etc/db-hidden.env", "--project", corpus.DBAPP.directory, "--json"),
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    findings = json.loads(done.stdout)["findings"]
    denied = [f for f in findings if f["check"] == "denied-network"]
    assert len(denied) == 1, findings
    assert denied[0]["severity"] == "error"
    assert "IPAddressDeny=any" in denied[0]["problem"]
    assert "timeout expired" in denied[0]["evidence"], denied[0]
    assert "--ip-address-allow" in denied[0]["fix"]
    # The healthy apps before it drew no such finding: the unit that reached its database.
    done = corpus.opskit(
        box,
        "doctor",
        "db-remote",
        *corpus.DBAPP.cli_args("gunicorn"),
        *("--set", f"environment.DATABASE_URL={db.url_at(REMOTE)}"),
        *("--project", corpus.DBAPP.directory, "--json"),
    )
    assert "Traceback" not in done.stderr, done.stderr
    checks = [f["check"] for f in json.loads(done.stdout)["findings"]]
    assert "denied-network" not in checks, checks
