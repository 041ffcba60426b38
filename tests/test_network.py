"""The network decision: what the environment's URLs and the dependencies make the unit allow."""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opskit.errors import SpecError
from opskit.spec import build_spec
from opskit.systemd.dependencies import Dependencies, dependencies, project_dir
from opskit.systemd.endpoints import Endpoint, Unreadable, endpoints
from opskit.systemd.network import decide, network_needs
from opskit.systemd.units import render_units
from tests.conftest import WHEELHOUSE, needs_analyze, verify, wheelhouse_venv
from tests.unitfile import parse, security_score, value, values


def _spec(*env: str, **raw: object):
    return build_spec({"name": "app", "app": "app.wsgi:app", "environment": list(env), **raw})


def _one(value: str, name: str = "DATABASE_URL") -> Endpoint | Unreadable:
    found = endpoints([(name, value)])
    assert len(found) == 1, found
    return found[0]


# --- reading the environment --------------------------------------------------------------

# (value, host as written, address, unix socket); None where not one.
TCP = [
    ("postgresql://u:p%40ss@10.0.0.5:5432/shop", "10.0.0.5", "10.0.0.5"),
    # An unescaped "@" in the password: the host is after the last one.
    ("postgresql://u:p@ss@10.0.0.5/shop", "10.0.0.5", "10.0.0.5"),
    ("postgresql://u:p%25x%3A@[2001:DB8::5]:5432/shop", "2001:DB8::5", "2001:db8::5"),
    # A zone is not part of the address IPAddressAllow= filters on.
    ("postgresql://[fe80::1%25eth0]:5432/shop", "fe80::1%eth0", "fe80::1"),
    ("postgres://shop:p%40ss@db/shop", "db", None),
    ("postgresql+psycopg://u@localhost/shop", "localhost", "127.0.0.1"),
    # libpq's hostaddr= is what it connects to, whatever the netloc says.
    ("postgresql://u@db.internal/shop?hostaddr=10.0.0.9", "10.0.0.9", "10.0.0.9"),
    ("redis://:secret@[::1]:6379/0", "::1", "::1"),
    ("rediss://cache.example.com:6380", "cache.example.com", None),
    # Other clients than libpq go to localhost over TCP when the URL names no host.
    ("mysql+pymysql://u:p@/shop", "localhost", "127.0.0.1"),
    ("amqp://guest:guest@localhost//", "localhost", "127.0.0.1"),
    ("mongodb+srv://u:p@cluster0.example.net/db", "cluster0.example.net", None),
]


@pytest.mark.parametrize(("url", "host", "address"), TCP, ids=[t[0] for t in TCP])
def test_tcp_endpoints(url: str, host: str, address: str | None) -> None:
    ep = _one(url)
    assert isinstance(ep, Endpoint) and ep.certain and ep.tcp
    assert ep.host == host
    assert ep.address == (ipaddress.ip_address(address) if address else None)


UNIX = [
    ("postgresql:///shop", ""),
    ("postgresql://u@/shop", ""),
    ("postgresql:///shop?host=/run/postgresql", "/run/postgresql"),
    # ?host= wins over the netloc's host, as in libpq.
    ("postgresql://u@localhost/shop?host=/run/postgresql", "/run/postgresql"),
    # A percent-encoded path as the host; a path keeps its case.
    ("postgresql://%2Frun%2FPostgreSQL/shop", "/run/PostgreSQL"),
    ("redis+socket:///run/redis/redis.sock", "/run/redis/redis.sock"),
    ("unix:///run/redis/redis.sock?db=0", "/run/redis/redis.sock"),
    ("mysql://u:p@/shop?unix_socket=/run/mysqld/mysqld.sock", "/run/mysqld/mysqld.sock"),
]


@pytest.mark.parametrize(("url", "socket"), UNIX, ids=[u[0] for u in UNIX])
def test_unix_socket_endpoints(url: str, socket: str) -> None:
    ep = _one(url)
    assert isinstance(ep, Endpoint) and not ep.tcp and ep.unix == socket


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://u@[::1/shop", "Invalid IPv6 URL"),
        ("postgresql://u@127.0.0.1:99999/shop", "port 99999 is out of range"),
        ("postgresql://u@127.0.0.1:5432x/shop", "is not a number"),
        # A "/" in an unescaped password ends the netloc early: not a host at all.
        ("postgresql://u:pa/ss@10.0.0.5/shop", "is not a number"),
        ("postgresql://u@${DB_HOST}/shop", "neither an address nor a host name"),
        ("redis://[10.0.0.5]:6379", "IPv4 address cannot be in brackets"),
    ],
)
def test_unreadable_urls_say_why(url: str, reason: str) -> None:
    ep = _one(url)
    assert isinstance(ep, Unreadable) and reason in ep.reason


def test_a_broken_socket_url_is_unreadable() -> None:
    ep = _one("redis+socket://[::1/run/redis.sock", "REDIS_URL")
    assert isinstance(ep, Unreadable) and "Invalid IPv6 URL" in ep.reason


_URLISH = st.one_of(
    st.text(),
    st.builds(
        "{}://{}{}".format,
        st.sampled_from(["postgresql", "redis+socket", "mysql", "https", "mongodb+srv", "unix"]),
        st.text(alphabet="[]:@%/,.?=&abc019", max_size=30),
        st.text(max_size=10),
    ),
)


@given(
    st.lists(st.tuples(st.sampled_from(["DATABASE_URL", "DB_HOST", "X_DSN", "PGHOST"]), _URLISH))
)
def test_any_environment_gives_a_decision(env: list[tuple[str, str]]) -> None:
    # Whatever the values, the decision is made (a warning at worst), never an exception.
    for socket in (False, True):
        spec = build_spec({"name": "a", "app": "a:b", "socket": socket})
        # Straight into the spec: the decision must hold even for values build_spec refuses.
        d = decide(dataclasses.replace(spec, environment=tuple(env)))
        assert d.mode in ("private", "deny", "open")


def test_several_hosts_count_one_by_one() -> None:
    found = endpoints([("DATABASE_URL", "postgresql://db1:5432,10.0.0.6:5433,[::1]/shop")])
    assert [e.host for e in found if isinstance(e, Endpoint)] == ["db1", "10.0.0.6", "::1"]


def test_what_is_not_a_connection() -> None:
    env = [
        ("STATIC_URL", "/static/"),
        ("DATABASE_URL", "sqlite:////var/lib/app/db.sqlite3"),
        ("BUCKET_URL", "s3://my-bucket/uploads"),
        ("SERVER_HOST", "0.0.0.0"),  # an address to bind, not to connect to
        ("DB_HOST", ""),
        ("GREETING", "hello://not a url"),
        ("DJANGO_SETTINGS_MODULE", "shop.settings"),
    ]
    assert endpoints(env) == []


def test_host_variables_and_libpq_strings() -> None:
    env = [
        ("DB_HOST", "10.0.0.7:5432"),
        ("PGHOST", "/run/postgresql"),
        ("REDIS_HOST", "[2001:db8::7]:6379"),
        ("EMAIL_HOST", "smtp.example.com"),
        ("PUBLIC_HOST", "shop.example.com"),  # no data store's word: a maybe
        ("PG_DSN", "host='/run/postgresql' dbname=shop user=shop"),
        ("OTHER_DSN", "hostaddr=10.0.0.8 port=5432 dbname=shop"),
    ]
    found = [e for e in endpoints(env) if isinstance(e, Endpoint)]
    summary = [(e.variable, e.host or e.unix, e.certain) for e in found]
    assert summary == [
        ("DB_HOST", "10.0.0.7", True),
        ("PGHOST", "/run/postgresql", True),
        ("REDIS_HOST", "2001:db8::7", True),
        ("EMAIL_HOST", "smtp.example.com", True),
        ("PUBLIC_HOST", "shop.example.com", False),
        ("PG_DSN", "/run/postgresql", True),
        ("OTHER_DSN", "10.0.0.8", True),
    ]


def test_a_url_without_host_defers_to_pghost() -> None:
    # libpq takes PGHOST when the URL names no host: that one is looked at by itself.
    found = endpoints([("DATABASE_URL", "postgresql:///shop"), ("PGHOST", "10.0.0.5")])
    assert [(e.variable, e.host) for e in found if isinstance(e, Endpoint)] == [
        ("PGHOST", "10.0.0.5")
    ]


def test_http_urls_are_only_maybe() -> None:
    ep = _one("https://user:tok%40en@api.example.com:8443/v1", "API_URL")
    assert isinstance(ep, Endpoint) and not ep.certain and ep.host == "api.example.com"


# --- the decision -------------------------------------------------------------------------


def test_nothing_named_keeps_the_default() -> None:
    d = decide(_spec())
    assert (d.mode, d.allow, d.notes, d.errors) == ("deny", ("localhost",), (), ())
    assert decide(_spec(socket=True)).mode == "private"


def test_a_literal_address_is_allowed_and_said() -> None:
    d = decide(_spec("DATABASE_URL=postgresql://u:p%40ss@10.0.0.5:5432/shop"))
    assert d.mode == "deny" and d.allow == ("localhost", "10.0.0.5")
    assert d.relaxed == ("IPAddressAllow=10.0.0.5: DATABASE_URL connects to it",)
    assert d.notes == d.relaxed and not d.errors


def test_loopback_is_inside_localhost_already() -> None:
    env = ("DATABASE_URL=postgresql://u@127.0.0.1/shop", "REDIS_URL=redis://[::1]:6379")
    d = decide(_spec(*env))
    assert d.allow == ("localhost",) and d.relaxed == ()
    assert d.notes == (
        "DATABASE_URL: 127.0.0.1 is allowed (IPAddressAllow=localhost)",
        "REDIS_URL: ::1 is allowed (IPAddressAllow=localhost)",
    )


def test_ipv6_literal_and_zone() -> None:
    d = decide(_spec("A_URL=postgresql://[2001:DB8::5]:5432/s", "B_URL=redis://[fe80::1%25lo]"))
    assert d.allow == ("localhost", "2001:db8::5", "fe80::1")


def test_a_host_name_drops_the_deny_rule() -> None:
    d = decide(_spec("DATABASE_URL=postgres://shop:p%40ss@db/shop"))
    assert d.outbound and d.mode == "open" and d.allow == ()
    assert d.relaxed == (
        "no IPAddressDeny=: DATABASE_URL names the host db "
        "(IPAddressAllow= takes addresses only, and the name needs DNS)",
    )
    # ... and then the addresses allowed on the way mean nothing: not said.
    d = decide(_spec("DATABASE_URL=postgresql://db,10.0.0.6/shop"))
    assert d.mode == "open" and len(d.relaxed) == 1
    assert not [n for n in d.notes if n.startswith("IPAddressAllow=")]


def test_the_users_own_list_is_kept_over_a_host_name() -> None:
    spec = _spec(
        "DATABASE_URL=postgres://u@db/shop", hardening={"ip_address_allow": ["10.0.0.0/8"]}
    )
    d = decide(spec)
    assert d.mode == "deny" and d.allow == ("localhost", "10.0.0.0/8") and d.relaxed == ()
    assert d.notes[0].startswith("warning: DATABASE_URL names the host db: IPAddressAllow= takes")


def test_a_users_prefix_covers_a_literal() -> None:
    spec = _spec("DB_HOST=10.1.2.3", hardening={"ip_address_allow": ["10.0.0.0/8"]})
    d = decide(spec)
    assert d.allow == ("localhost", "10.0.0.0/8")
    assert d.notes == ("DB_HOST: 10.1.2.3 is allowed (IPAddressAllow=10.0.0.0/8)",)


def test_unix_sockets_need_nothing_with_or_without_socket_activation() -> None:
    for socket in (False, True):
        d = decide(_spec("DATABASE_URL=postgresql:///shop?host=/run/postgresql", socket=socket))
        assert d.mode == ("private" if socket else "deny") and not d.errors
        assert d.notes == ("DATABASE_URL: through /run/postgresql: no IP address needed",)


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgresql://u@127.0.0.1/shop", "--ip-address-allow 127.0.0.1"),
        # localhost is ::1 as well: the word, not one address.
        ("postgresql://u@localhost/shop", "--ip-address-allow localhost"),
        ("postgresql://u@[2001:db8::5]/shop", "--ip-address-allow 2001:db8::5"),
        ("postgres://u@db/shop", "--allow-outbound"),
    ],
)
def test_tcp_with_socket_activation_is_refused(url: str, fix: str) -> None:
    d = decide(_spec(f"DATABASE_URL={url}", socket=True))
    assert d.mode == "private" and len(d.errors) == 1
    error = d.errors[0]
    assert error.startswith("environment.DATABASE_URL: connects to ")
    assert "with --socket the service has no network (PrivateNetwork=yes)" in error
    assert "its unix socket (postgresql:///DBNAME?host=/run/postgresql)" in error
    assert fix in error and "--allow-outbound" in error
    with pytest.raises(SpecError, match=r"^environment\.DATABASE_URL: connects to"):
        render_units(_spec(f"DATABASE_URL={url}", socket=True))


def test_socket_activation_with_an_allow_list_gets_exactly_that() -> None:
    spec = _spec(
        "DATABASE_URL=postgresql://u@127.0.0.1/shop",
        socket=True,
        hardening={"ip_address_allow": ["127.0.0.1"]},
    )
    d = decide(spec)
    assert d.mode == "deny" and d.allow == ("127.0.0.1",) and not d.errors
    # 127.0.0.1 alone is not localhost: a URL naming localhost would also try ::1.
    spec = _spec(
        "DATABASE_URL=postgresql://u@localhost/shop",
        socket=True,
        hardening={"ip_address_allow": ["127.0.0.1"]},
    )
    d = decide(spec)
    assert d.mode == "deny" and d.allow == ("127.0.0.1", "localhost")


def test_hatches_and_profiles_leave_nothing_to_decide() -> None:
    env = "DATABASE_URL=postgresql://u@10.0.0.5/shop"
    for raw in (
        {"hardening": {"allow_outbound": True}},
        {"hardening": {"profile": "relaxed"}},
        {"hardening": {"profile": "off"}},
        {"socket": True, "hardening": {"allow_outbound": True}},
    ):
        d = decide(_spec(env, **raw), Dependencies(frozenset({"requests"})))
        assert (d.mode, d.notes, d.errors) == ("open", (), ()), raw


def test_a_public_listener_ignores_the_allow_list_and_says_so() -> None:
    d = decide(_spec(host="0.0.0.0", hardening={"ip_address_allow": ["10.0.0.5"]}))
    assert d.mode == "open"
    assert d.relaxed == ("no IPAddressDeny=: the app listens on a non-loopback address",)
    assert d.notes[1].startswith("warning: hardening.ip-address-allow is not applied")


def test_maybe_urls_only_warn() -> None:
    d = decide(_spec("SITE_URL=https://shop.example.com", "API_URL=http://192.0.2.8:8080/v1"))
    assert d.mode == "deny" and d.allow == ("localhost",) and d.relaxed == ()
    assert d.notes == (
        "warning: SITE_URL names the host shop.example.com: if the app connects there, under "
        "IPAddressDeny=any a connect to it hangs (its SYNs are dropped); give --allow-outbound "
        "(or --ip-address-allow with its address and a DNS resolver's)",
        "warning: API_URL names 192.0.2.8: if the app connects there, under IPAddressDeny=any "
        "a connect to it hangs (its SYNs are dropped); give --ip-address-allow 192.0.2.8",
    )


def test_unreadable_values_warn_and_allow_nothing() -> None:
    d = decide(_spec("DATABASE_URL=postgresql://u@[::1/shop", socket=True))
    assert d.mode == "private" and not d.errors
    assert d.notes == ("warning: DATABASE_URL: cannot read its host (Invalid IPv6 URL)",)


def test_dependencies_warn_one_line_per_kind() -> None:
    found = Dependencies(frozenset({"psycopg", "psycopg-binary", "requests", "urllib3", "jinja2"}))
    d = decide(_spec(), found)
    assert d.mode == "deny" and d.allow == ("localhost",) and d.relaxed == ()
    assert d.notes == (
        "warning: psycopg, psycopg-binary (PostgreSQL clients) are dependencies, and no URL in "
        "the environment says where it connects: over TCP to another host it needs "
        "--ip-address-allow ADDR (a host name: --allow-outbound); its unix socket works as is",
        "warning: requests, urllib3 (HTTP clients) are dependencies: under IPAddressDeny=any a "
        "connect to another host hangs (its SYNs are dropped) until the client's timeout, and "
        "a host name needs DNS; if the app connects out, give --ip-address-allow ADDR or "
        "--allow-outbound",
    )
    private = decide(_spec(socket=True), Dependencies(frozenset({"asyncpg"})))
    assert private.notes == (
        "warning: asyncpg (a PostgreSQL client) is a dependency, and no URL in the environment "
        "says where it connects: over TCP, even to 127.0.0.1, it needs --ip-address-allow "
        "ADDR (a host name: --allow-outbound); its unix socket works as is",
    )


def test_a_url_of_the_kind_answers_the_dependency() -> None:
    found = Dependencies(frozenset({"psycopg", "redis"}))
    d = decide(_spec("DATABASE_URL=postgresql:///shop"), found)
    assert [n for n in d.notes if "psycopg" in n] == []
    assert [n for n in d.notes if n.startswith("warning: redis (a Redis client)")]


def test_dependencies_never_change_the_unit(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("psycopg[binary]\nrequests\nboto3\n")
    for env in ("REDIS_URL=redis://10.0.0.5", "DATABASE_URL=postgresql:///shop"):
        spec = _spec(env)
        decision = network_needs(spec, tmp_path)
        assert any("warning: requests (an HTTP client)" in n for n in decision.notes)
        assert any("warning: boto3 (a cloud SDK)" in n for n in decision.notes)
        assert render_units(spec, decision) == render_units(spec)


# --- reading the dependencies ---------------------------------------------------------------


def test_declared_dependencies(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "shop"\ndependencies = [\n'
        '  "Flask>=3",\n  "psycopg[binary,pool] >= 3.1 ; python_version >= \'3.10\'",\n'
        '  "my_Lib.Name @ https://example.com/x.whl",\n]\n'
        '[tool.poetry.dependencies]\npython = "^3.11"\nredis = "^5"\n'
    )
    (tmp_path / "requirements.txt").write_text(
        "# pinned\n-r requirements-base.txt\n-e .\n--index-url https://example.com/simple\n"
        "requests==2.32.3 --hash=sha256:0123 \\\n    --hash=sha256:4567\n"
        "git+https://example.com/repo.git#egg=thing\n"
        "aiohttp>=3  # client\n"
    )
    (tmp_path / "requirements-dev.txt").write_text("pytest\n")
    found = dependencies(_spec(venv=str(tmp_path / "no-venv")), tmp_path)
    assert found.names == {
        "flask",
        "psycopg",
        "my-lib-name",
        "redis",
        "requests",
        "aiohttp",
        "pytest",
    }
    assert found.sources == ("pyproject.toml", "requirements-dev.txt", "requirements.txt")
    assert found.problems == ()


def test_an_unreadable_pyproject_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\n")
    found = dependencies(_spec(venv=str(tmp_path / "no-venv")), tmp_path)
    assert found.names == set() and found.problems[0].startswith("pyproject.toml: not read")
    assert decide(_spec(), found).notes[0].startswith("warning: pyproject.toml: not read")


def test_installed_distributions_of_this_venv() -> None:
    # The venv running the tests: real dist-info directories, read by name only.
    found = dependencies(_spec(venv=sys.prefix), Path("/nonexistent"))
    assert {"jinja2", "typer", "pytest"} <= found.names
    assert found.sources[-1].startswith("the venv's ")


@pytest.mark.skipif(
    not any(WHEELHOUSE.glob("psycopg-*")), reason="no wheelhouse with psycopg (make wheelhouse)"
)
def test_a_venv_with_psycopg_and_requests_installed(tmp_path: Path) -> None:
    venv = wheelhouse_venv(tmp_path / "venv", "psycopg", "requests")
    spec = _spec(venv=str(venv), working_directory=str(tmp_path))
    assert project_dir(spec) == tmp_path
    decision = network_needs(spec, project_dir(spec))
    assert [n.split(" (")[0] for n in decision.notes] == ["warning: psycopg", "warning: requests"]


def test_project_dir_is_the_working_directory_where_it_exists(tmp_path: Path) -> None:
    assert project_dir(_spec(working_directory=str(tmp_path)), Path("/x")) == tmp_path
    assert project_dir(_spec(working_directory="/nonexistent/app"), Path("/x")) == Path("/x")


# --- the spec key -------------------------------------------------------------------------


def test_ip_address_allow_entries_are_validated_and_normalised() -> None:
    entries = ["10.0.0.5", "2001:DB8::5", "10.0.0.5/8", " Localhost ", "10.0.0.5", "any"]
    spec = _spec(hardening={"ip_address_allow": entries})
    assert spec.hardening.ip_address_allow == (
        "10.0.0.5",
        "2001:db8::5",
        "10.0.0.5/8",
        "localhost",
        "any",
    )
    for bad in ("fe80::1%eth0", "10.0.0.0/33", "db.example.com", "", "10.0.0.5 10.0.0.6"):
        with pytest.raises(SpecError, match=r"^hardening.ip-address-allow\[0\]: expected an IP"):
            _spec(hardening={"ip_address_allow": [bad]})
    with pytest.raises(SpecError, match="expected a list of strings"):
        _spec(hardening={"ip_address_allow": "10.0.0.5"})


# --- the units: verified and scored ---------------------------------------------------------

# (spec overrides, exposure score, what the network lines are)
UNITS = {
    "default": ({}, 0.9, {"IPAddressAllow": ["localhost"], "IPAddressDeny": ["any"]}),
    "socket": ({"socket": True}, 0.4, {"PrivateNetwork": ["yes"], "IPAddressDeny": []}),
    "unix-socket database, socket": (
        {"socket": True, "environment": ["DATABASE_URL=postgresql:///shop?host=/run/postgresql"]},
        0.4,
        {"PrivateNetwork": ["yes"], "RestrictAddressFamilies": ["AF_UNIX"]},
    ),
    "loopback database": (
        {"environment": ["DATABASE_URL=postgresql://u:p%40ss@127.0.0.1:5432/shop"]},
        0.9,
        {"IPAddressAllow": ["localhost"], "IPAddressDeny": ["any"]},
    ),
    "allow list": (
        {"hardening": {"ip_address_allow": ["10.0.0.0/8", "2001:db8::5", "link-local"]}},
        1.0,
        {
            "IPAddressAllow": ["localhost 10.0.0.0/8 2001:db8::5 link-local"],
            "IPAddressDeny": ["any"],
        },
    ),
    "literal address in the environment": (
        {"environment": ["DATABASE_URL=postgresql://u@[2001:db8::5]:5432/shop"]},
        1.0,
        {"IPAddressAllow": ["localhost 2001:db8::5"], "IPAddressDeny": ["any"]},
    ),
    "host name in the environment": (
        {"environment": ["REDIS_URL=rediss://cache.example.com:6380/0"]},
        1.1,
        {"IPAddressAllow": [], "IPAddressDeny": []},
    ),
    "socket with an allow list": (
        {
            "socket": True,
            "environment": ["DATABASE_URL=postgresql://u@127.0.0.1/shop"],
            "hardening": {"ip_address_allow": ["127.0.0.1"]},
        },
        0.9,
        {"PrivateNetwork": [], "IPAddressAllow": ["127.0.0.1"], "IPAddressDeny": ["any"]},
    ),
}


@needs_analyze
@pytest.mark.parametrize("case", UNITS, ids=list(UNITS))
def test_units_verify_clean_and_score(case: str, tmp_path: Path) -> None:
    extra, score, lines = UNITS[case]
    raw: dict[str, object] = {"name": "app", "app": "app.wsgi:app", **extra}
    for file in render_units(build_spec(raw)):
        (tmp_path / file.name).write_text(file.content)
    for unit in sorted(tmp_path.iterdir()):
        assert verify(unit) == "", unit.read_text()
    service = tmp_path / "app.service"
    sections = parse(service.read_text())
    for key, expected in lines.items():
        assert values(sections, "Service", key) == expected, (key, service.read_text())
    assert security_score(service) == score
    if score > 0.9 and case != "allow list":
        # What opskit relaxed on its own is said in the unit.
        assert "\n# Relaxed: " in service.read_text()
    assert value(sections, "Service", "NoNewPrivileges") == "yes"
