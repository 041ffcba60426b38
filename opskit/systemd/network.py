"""The network a service needs: what its unit must allow, decided from the app's own settings.

The default profile denies IP traffic with other hosts (``IPAddressDeny=any`` beside
``IPAddressAllow=localhost``), and with socket activation takes the network away
(``PrivateNetwork=yes``, ``AF_UNIX`` only). Either breaks an app that talks to a database
or an API elsewhere, and silently: a denied TCP connect is not refused, its SYNs are
dropped and the client waits for its own timeout; DNS to a non-local resolver fails.

Two things say what the app connects to:

- the URL-like values of the spec's environment (``DATABASE_URL``, ``REDIS_URL``,
  ``*_URL``, ``*_URI``, ``*_DSN``, ``*_HOST``, ``PGHOST``): a data store's URL is a
  connection the app makes for certain, so its literal IP address is allowed, a host name
  drops ``IPAddressDeny=`` (IPAddressAllow= takes addresses, and the name needs DNS), a
  unix socket needs nothing; with socket activation a TCP one is refused, since opskit
  does not give the network back on its own. An http(s) URL may just as well be one the
  app only renders (``SITE_URL``, ``STATIC_URL``): a warning names the fix, nothing is
  relaxed;
- the app's dependencies (``DEPENDENCIES``): a client library without a URL says that the
  app connects somewhere, not where, so it only draws a warning.

``decide`` is pure and reads the spec alone (the unit depends on nothing else);
``network_needs`` adds what ``dependencies`` reads from the project and its venv, which
only adds warnings.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from opskit.spec import AppSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Distributions that connect to something, by what they connect to. Names are PEP 503
#: normalised (lower case, runs of ``-_.`` as ``-``).
DEPENDENCIES: dict[str, str] = {
    # PostgreSQL drivers: TCP to HOST:5432, or the server's unix socket (/run/postgresql).
    "psycopg": "postgresql",
    "psycopg-binary": "postgresql",
    "psycopg-c": "postgresql",
    "psycopg-pool": "postgresql",
    "psycopg2": "postgresql",
    "psycopg2-binary": "postgresql",
    "asyncpg": "postgresql",
    "pg8000": "postgresql",
    "aiopg": "postgresql",
    # MySQL and MariaDB drivers: TCP to HOST:3306, or /run/mysqld/mysqld.sock.
    "pymysql": "mysql",
    "mysqlclient": "mysql",
    "mysql-connector-python": "mysql",
    "aiomysql": "mysql",
    "asyncmy": "mysql",
    "mariadb": "mysql",
    # Redis and Valkey clients: TCP to HOST:6379, or a unix socket.
    "redis": "redis",
    "aioredis": "redis",
    "valkey": "redis",
    # MongoDB drivers: TCP to HOST:27017; mongodb+srv:// needs DNS whatever the host.
    "pymongo": "mongodb",
    "motor": "mongodb",
    # memcached clients: TCP to HOST:11211, or a unix socket.
    "pymemcache": "memcached",
    "python-memcached": "memcached",
    "pylibmc": "memcached",
    # Message brokers: AMQP (RabbitMQ) on 5672, Kafka on 9092; Celery and kombu talk to
    # whichever broker the app names.
    "pika": "amqp",
    "aio-pika": "amqp",
    "kombu": "amqp",
    "celery": "amqp",
    "kafka": "kafka",
    "kafka-python": "kafka",
    "confluent-kafka": "kafka",
    "aiokafka": "kafka",
    # Search and wide-column stores: Elasticsearch/OpenSearch over HTTP(S) on 9200,
    # Cassandra on 9042.
    "elasticsearch": "elasticsearch",
    "opensearch-py": "elasticsearch",
    "cassandra-driver": "cassandra",
    # HTTP clients: outbound HTTP to whatever hosts the code names (often none configured
    # in the environment at all). sentry-sdk sends every error report to its DSN's host.
    "requests": "http",
    "httpx": "http",
    "aiohttp": "http",
    "urllib3": "http",
    "httplib2": "http",
    "pycurl": "http",
    "sentry-sdk": "http",
    # Cloud SDKs: endpoints are host names (DNS) whose addresses change.
    "boto3": "cloud",
    "botocore": "cloud",
    "aiobotocore": "cloud",
    "google-cloud-storage": "cloud",
    "google-api-core": "cloud",
    "azure-core": "cloud",
}

#: What each kind is, in a warning.
KIND_NAMES = {
    "postgresql": "a PostgreSQL client",
    "mysql": "a MySQL client",
    "redis": "a Redis client",
    "mongodb": "a MongoDB client",
    "memcached": "a memcached client",
    "amqp": "a message-broker client",
    "kafka": "a Kafka client",
    "elasticsearch": "an Elasticsearch client",
    "cassandra": "a Cassandra client",
    "database": "a database",
    "smtp": "a mail server",
    "http": "an HTTP client",
    "cloud": "a cloud SDK",
}
#: Kinds that also listen on a unix socket, which works under every profile.
UNIX_SOCKET_KINDS = ("postgresql", "mysql", "redis", "memcached", "mongodb", "database")
#: How to name the unix socket in the URL instead, where there is a usual way.
UNIX_SOCKET_HINTS = {
    "postgresql": "postgresql:///DBNAME?host=/run/postgresql",
    "mysql": "mysql://USER@/DBNAME?unix_socket=/run/mysqld/mysqld.sock",
    "redis": "unix:///run/redis/redis-server.sock",
}

#: URL schemes of the data stores and brokers: a connection the app makes for certain.
SCHEMES = {
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "pgsql": "postgresql",
    "cockroachdb": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "redis": "redis",
    "rediss": "redis",
    "valkey": "redis",
    "valkeys": "redis",
    "mongodb": "mongodb",
    "memcached": "memcached",
    "memcache": "memcached",
    "pymemcache": "memcached",
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
    "kafka": "kafka",
    "cassandra": "cassandra",
    "mssql": "database",
    "oracle": "database",
    "clickhouse": "database",
    "smtp": "smtp",
    "smtps": "smtp",
    "submission": "smtp",
}
#: Schemes that may be a connection or only a link the app renders (SITE_URL, STATIC_URL).
LINK_SCHEMES = {"http": "http", "https": "http", "ws": "http", "wss": "http"}
#: Schemes that name no host to connect to.
LOCAL_SCHEMES = ("sqlite", "file", "unix", "s3", "gs", "data", "mailto")
#: Words in a *_HOST variable's name that say it is a data store's host.
HOST_WORDS = {
    "PG": "postgresql",
    "POSTGRES": "postgresql",
    "POSTGRESQL": "postgresql",
    "DB": "database",
    "DATABASE": "database",
    "MYSQL": "mysql",
    "MARIADB": "mysql",
    "REDIS": "redis",
    "VALKEY": "redis",
    "CACHE": "database",
    "MONGO": "mongodb",
    "MONGODB": "mongodb",
    "MEMCACHE": "memcached",
    "MEMCACHED": "memcached",
    "AMQP": "amqp",
    "RABBIT": "amqp",
    "RABBITMQ": "amqp",
    "BROKER": "amqp",
    "KAFKA": "kafka",
    "ELASTIC": "elasticsearch",
    "ELASTICSEARCH": "elasticsearch",
    "OPENSEARCH": "elasticsearch",
    "CASSANDRA": "cassandra",
    "SMTP": "smtp",
    "EMAIL": "smtp",
    "MAIL": "smtp",
}
#: The networks systemd's words stand for in IPAddressAllow= (systemd.resource-control(5)).
WORD_NETWORKS: dict[str, tuple[str, ...]] = {
    "any": ("0.0.0.0/0", "::/0"),
    "localhost": ("127.0.0.0/8", "::1/128"),
    "link-local": ("169.254.0.0/16", "fe80::/64"),
    "multicast": ("224.0.0.0/4", "ff00::/8"),
}

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")
# libpq's key=value connection strings ("host=/run/postgresql dbname=shop").
_CONNINFO_KEYS = frozenset(
    {"host", "hostaddr", "port", "dbname", "user", "password", "sslmode", "options"}
)
_CONNINFO_WORD = re.compile(r"^\s*([a-z_]+)\s*=")


@dataclass(frozen=True)
class Endpoint:
    """One place the environment says the app connects to."""

    #: The variable that names it.
    variable: str
    #: What it is: a key of KIND_NAMES.
    kind: str
    #: Whether the app surely connects there (a data store), not just maybe (an http URL).
    certain: bool
    #: The host as written: an address, a name, or "" for a unix socket.
    host: str = ""
    #: The IP address when the host is one (localhost counts as 127.0.0.1).
    address: Address | None = None
    #: The unix socket (or its directory) when it connects through one; "" for the default.
    unix: str | None = None

    @property
    def tcp(self) -> bool:
        """Whether it needs IP: anything but a unix socket."""
        return self.unix is None

    @property
    def entry(self) -> str:
        """The IPAddressAllow= entry that lets the app reach it (an address host only)."""
        # "localhost" resolves to ::1 as well as 127.0.0.1: the word covers both. A connect
        # to 0.0.0.0 or :: goes to this host, over loopback.
        if self.host.lower() == "localhost" or (self.address and self.address.is_unspecified):
            return "localhost"
        return str(self.address)

    def covered_by(self, allow: Iterable[str]) -> str | None:
        """The entry of ``allow`` that lets the app reach it, or None."""
        if self.address is None:
            return None
        wanted = networks(self.entry)
        for entry in allow:
            outer = networks(entry)
            if all(any(_within(w, n) for n in outer) for w in wanted):
                return entry
        return None


@dataclass(frozen=True)
class Unreadable:
    """A URL-like value that could not be parsed: nothing is allowed for it."""

    variable: str
    reason: str


Mode = Literal["private", "deny", "open"]


@dataclass(frozen=True)
class NetworkDecision:
    """What the unit allows, and why: the network directives and the lines that say so."""

    #: "private": PrivateNetwork=yes and AF_UNIX only; "deny": IPAddressAllow= ``allow``
    #: and IPAddressDeny=any; "open": no IP restriction.
    mode: Mode
    #: The IPAddressAllow= entries when ``mode`` is "deny".
    allow: tuple[str, ...] = ()
    #: What opskit relaxed on its own, for the unit's "# Relaxed:" comments.
    relaxed: tuple[str, ...] = ()
    #: The decision and its reasons, and warnings ("warning: ..."): one line each for stderr.
    notes: tuple[str, ...] = ()
    #: Why the spec cannot work under this profile: the generator refuses it (exit 2).
    errors: tuple[str, ...] = ()
    #: The endpoints found in the environment.
    endpoints: tuple[Endpoint, ...] = field(default=(), compare=False)

    @property
    def outbound(self) -> bool:
        """Whether the service may connect anywhere (no IPAddressDeny=, no PrivateNetwork=)."""
        return self.mode == "open"

    @property
    def directives(self) -> list[tuple[str, str]]:
        """RestrictAddressFamilies= and the IP directives, in unit order."""
        if self.mode == "private":
            # The .socket unit's listening socket is inherited, so the service itself
            # needs no network: no interfaces but loopback, no new inet sockets.
            return [("PrivateNetwork", "yes"), ("RestrictAddressFamilies", "AF_UNIX")]
        d = [("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX")]
        if self.mode == "deny":
            d += [("IPAddressAllow", " ".join(self.allow)), ("IPAddressDeny", "any")]
        return d


# --- where the environment says the app connects ------------------------------------------


def _address(host: str) -> Address | None:
    if host.lower() == "localhost":
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        # A zone ("fe80::1%eth0") is not part of the address systemd filters on.
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _split_hostport(item: str) -> str:
    """The host of one ``host[:port]`` or ``[v6][:port]``; ValueError when malformed."""
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":\d*", rest)):
            raise ValueError(f"malformed IPv6 host {item!r}")
        if _address(host) is None:
            raise ValueError(f"not an IPv6 address in brackets: {host!r}")
        return host
    if item.count(":") > 1:
        # A bare IPv6 address (PGHOST=2001:db8::5), which has no port.
        if _address(item) is None:
            raise ValueError(f"not a host: {item!r}")
        return item
    host, colon, port = item.partition(":")
    if colon and not port.isdigit():
        raise ValueError(f"port {port!r} is not a number")
    if colon and not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is out of range")
    return host


def _hosts(netloc: str) -> list[str]:
    """The hosts of a URL's netloc, percent-decoded: userinfo dropped, ports checked.

    ``urlsplit``'s ``hostname`` takes one host only and lower-cases it (a unix socket
    path written in the host, ``%2Frun%2Fpostgresql``, is case-sensitive): parsed here.
    """
    hostport = netloc.rpartition("@")[2]  # the password may hold an unescaped "@"
    return [unquote(_split_hostport(item)) for item in hostport.split(",")] if hostport else [""]


def _endpoint(variable: str, kind: str, certain: bool, host: str) -> Endpoint | Unreadable | None:
    if host.startswith("/"):
        return Endpoint(variable, kind, certain, unix=host)
    if not host:
        return Endpoint(variable, kind, certain)
    address = _address(host)
    if address is None and not _HOST_NAME.fullmatch(host):
        return Unreadable(variable, f"{host!r} is neither an address nor a host name")
    if address is not None and address.is_unspecified and not certain:
        return None  # SERVER_HOST=0.0.0.0: an address to bind, not one to connect to
    return Endpoint(variable, kind, certain, host=host, address=address)


def _default_host(kind: str) -> str:
    # libpq connects to its unix socket when a URL names no host; the other clients
    # (redis-py, PyMySQL, pymongo, kombu) to localhost over TCP.
    return "/" if kind == "postgresql" else "localhost"


def _from_url(variable: str, value: str, pghost: bool) -> list[Endpoint | Unreadable]:
    scheme = value.split("://", 1)[0].lower()
    parts = scheme.split("+")
    if scheme == "mongodb+srv":
        kind, srv = "mongodb", True
    else:
        srv = False
        kind = SCHEMES.get(scheme) or SCHEMES.get(parts[0]) or LINK_SCHEMES.get(parts[0], "")
        if parts[0] == "unix":
            kind = "database"  # redis-py's unix:///run/redis/redis.sock and the like
    if "unix" in parts or "socket" in parts or parts[0] in LOCAL_SCHEMES:
        # redis+socket://, http+unix://, unix:///run/redis.sock, sqlite:///db.sqlite3 ...
        if kind:
            try:
                return [Endpoint(variable, kind, True, unix=urlsplit(value).path)]
            except ValueError as exc:
                return [Unreadable(variable, str(exc))]
        return []
    if not kind:
        return []
    certain = parts[0] not in LINK_SCHEMES
    try:
        parsed = urlsplit(value)
        hosts = _hosts(parsed.netloc)
        query = parse_qs(parsed.query)
    except ValueError as exc:
        return [Unreadable(variable, str(exc))]
    if kind == "postgresql":
        # libpq: ?hostaddr= is the address connected to, ?host= overrides the netloc's.
        for key in ("hostaddr", "host"):
            if query.get(key):
                hosts = query[key][-1].split(",")
                break
    elif kind == "mysql" and query.get("unix_socket"):
        return [Endpoint(variable, kind, True, unix=query["unix_socket"][-1])]
    found: list[Endpoint | Unreadable] = []
    for host in hosts:
        if not host:
            host = _default_host(kind)
            if host == "/":
                if not pghost:  # else libpq takes PGHOST's, which is looked at by itself
                    found.append(Endpoint(variable, kind, certain, unix=""))
                continue
        if srv:
            # The host is a DNS SRV record naming the servers: whatever it is, DNS.
            found.append(Endpoint(variable, kind, certain, host=host))
            continue
        _add(found, _endpoint(variable, kind, certain, host))
    return found


def _add(found: list[Endpoint | Unreadable], item: Endpoint | Unreadable | None) -> None:
    if item is not None:
        found.append(item)


def _conninfo(value: str) -> dict[str, str] | None:
    """The ``key=value`` form of libpq, or None when the value is not one."""
    try:
        words = shlex.split(value)
    except ValueError:
        return None
    pairs = {}
    for word in words:
        match = _CONNINFO_WORD.match(word)
        if not match or match.group(1) not in _CONNINFO_KEYS:
            return None
        pairs[match.group(1)] = word.split("=", 1)[1].strip()
    return pairs or None


def _host_kind(variable: str) -> str | None:
    words = variable.upper().split("_")
    return next((HOST_WORDS[w] for w in words if w in HOST_WORDS), None)


def endpoints(environment: Iterable[tuple[str, str]]) -> list[Endpoint | Unreadable]:
    """Where the environment's values say the app connects, in the environment's order."""
    env = dict(environment)
    found: list[Endpoint | Unreadable] = []
    for variable, raw in env.items():
        value = raw.strip()
        upper = variable.upper()
        if not value:
            continue
        if _URL.match(value):
            found += _from_url(variable, value, "PGHOST" in env)
            continue
        if upper in ("PGHOST", "PGHOSTADDR"):
            kind: str | None = "postgresql"
        elif upper.endswith(("_HOST", "_HOSTNAME")):
            kind = _host_kind(variable[: variable.rfind("_")])
        elif upper.endswith(("_DSN", "_URL", "_URI")) and (pairs := _conninfo(value)):
            host = pairs.get("hostaddr") or pairs.get("host")
            if host is None and "PGHOST" not in env:
                found.append(Endpoint(variable, "postgresql", True, unix=""))
            for item in host.split(",") if host else ():
                _add(found, _endpoint(variable, "postgresql", True, item))
            continue
        else:
            continue
        for item in value.split(","):
            try:
                host = item if item.startswith("/") else _split_hostport(item.strip())
            except ValueError as exc:
                found.append(Unreadable(variable, str(exc)))
                continue
            # A *_HOST without a data-store word (SERVER_HOST, PUBLIC_HOST) may just as
            # well be the app's own name: a maybe, like an http URL.
            _add(found, _endpoint(variable, kind or "database", kind is not None, host))
    return found


# --- the app's dependencies ---------------------------------------------------------------


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _requirement_name(line: str) -> str | None:
    line = line.split(" #", 1)[0].strip()
    if not line or line.startswith(("#", "-")) or "://" in line.split("@", 1)[0]:
        return None  # a comment, an option (-r, -e, --hash), a bare URL
    match = _REQUIREMENT_NAME.match(line)
    return canonical(match.group(1)) if match else None


@dataclass(frozen=True)
class Dependencies:
    """The app's distributions as far as this machine can tell, and where they were read."""

    names: frozenset[str] = frozenset()
    sources: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def dependencies(spec: AppSpec, project: Path) -> Dependencies:
    """The project's declared dependencies and, where the venv exists here, its installed ones.

    Declared: pyproject.toml's ``[project].dependencies`` (and Poetry's table), and every
    ``requirements*.txt`` in ``project``. Installed: the names of the venv's dist-info (and
    egg-info) directories; nothing is imported or run.
    """
    names: set[str] = set()
    sources: list[str] = []
    problems: list[str] = []
    pyproject = project / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"pyproject.toml: not read ({exc})")
        else:
            declared = data.get("project", {}).get("dependencies", [])
            poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
            found = [n for n in map(_requirement_name, _strings(declared)) if n]
            found += [canonical(n) for n in poetry if n != "python"]
            names.update(found)
            sources.append("pyproject.toml")
    for path in sorted(project.glob("requirements*.txt")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path.name}: not read ({exc})")
            continue
        names.update(n for n in map(_requirement_name, lines) if n)
        sources.append(path.name)
    installed = _installed(Path(spec.venv_path))
    if installed is not None:
        names.update(installed)
        sources.append(f"the venv's {len(installed)} installed distributions")
    return Dependencies(frozenset(names), tuple(sources), tuple(problems))


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _installed(venv: Path) -> set[str] | None:
    if not venv.is_dir():
        return None
    names = set()
    for site in venv.glob("lib*/python*/site-packages"):
        for meta in (*site.glob("*.dist-info"), *site.glob("*.egg-info")):
            names.add(canonical(meta.name.split("-", 1)[0].removesuffix(".egg-info")))
    return names


def project_dir(spec: AppSpec, cwd: Path | None = None) -> Path:
    """Where the app's dependencies are declared: its working directory, if on this machine.

    On the host that runs the service, that is the deployed code; elsewhere (a developer's
    checkout, CI) the working directory does not exist and the current directory, where
    the config file is, holds the project.
    """
    workdir = Path(spec.working_directory)
    return workdir if workdir.is_dir() else (cwd or Path.cwd())


# --- the decision ----------------------------------------------------------------------------


def loopback_only(spec: AppSpec) -> bool:
    """Whether the server listens on loopback or a unix socket only (behind a proxy)."""
    if spec.unix_socket or spec.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(spec.host).is_loopback
    except ValueError:
        return False


def networks(entry: str) -> list[Network]:
    """The networks an IPAddressAllow= entry covers."""
    return [ipaddress.ip_network(n, strict=False) for n in WORD_NETWORKS.get(entry, (entry,))]


def _within(inner: Network, outer: Network) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def decide(spec: AppSpec, found: Dependencies | None = None) -> NetworkDecision:
    """Decide the unit's network rules from the spec (and warn from the dependencies).

    The unit depends on the spec alone; ``found`` (see ``dependencies``) only adds
    warnings, so the same spec gives the same unit on every machine.
    """
    h = spec.hardening
    eps = endpoints(spec.environment)
    if h.profile != "default" or h.allow_outbound:
        # No IP rules in these profiles: nothing to allow, nothing to warn about.
        return NetworkDecision("open", endpoints=tuple(e for e in eps if isinstance(e, Endpoint)))
    if not spec.socket and not loopback_only(spec):
        notes = ["no IPAddressDeny=: the app listens on a non-loopback address"]
        if h.ip_address_allow:
            notes.append(
                "warning: hardening.ip-address-allow is not applied: IPAddressDeny=any would "
                "also refuse the clients of a server on a non-loopback address"
            )
        return NetworkDecision("open", relaxed=tuple(notes[:1]), notes=tuple(notes))
    return _Decider(spec, eps, found or Dependencies()).decide()


class _Decider:
    def __init__(
        self, spec: AppSpec, eps: list[Endpoint | Unreadable], found: Dependencies
    ) -> None:
        self.spec = spec
        self.eps = eps
        self.found = found
        self.user = spec.hardening.ip_address_allow
        # With --socket and no entries of the user's, the network is private: opskit does
        # not give it back on its own (see _private_tcp).
        self.private = spec.socket and not self.user
        self.allow = list(self.user) if spec.socket else ["localhost", *self.user]
        self.outbound = False
        self.relaxed: list[str] = []
        self.notes: list[str] = []
        self.errors: list[str] = []

    def decide(self) -> NetworkDecision:
        for ep in self.eps:
            if isinstance(ep, Unreadable):
                self.notes.append(f"warning: {ep.variable}: cannot read its host ({ep.reason})")
            elif not ep.tcp:
                self._unix(ep)
            elif self.private and ep.certain:
                self._private_tcp(ep)
            elif ep.address is not None:
                self._literal(ep)
            else:
                self._name(ep)
        if self.outbound:
            # No IPAddressDeny= at all: the addresses allowed on the way say nothing.
            self.relaxed = [r for r in self.relaxed if not r.startswith("IPAddressAllow=")]
            self.notes = [n for n in self.notes if not n.startswith("IPAddressAllow=")]
        if self.spec.socket and self.user and not self.outbound:
            self.notes.append(
                f"with --socket: IP to {' '.join(dict.fromkeys(self.allow))} only "
                "(hardening.ip-address-allow), instead of no network (PrivateNetwork=yes)"
            )
        self._dependencies()
        mode: Mode = "open" if self.outbound else "private" if self.private else "deny"
        return NetworkDecision(
            mode,
            allow=tuple(dict.fromkeys(self.allow)) if mode == "deny" else (),
            relaxed=tuple(self.relaxed),
            notes=tuple(self.notes),
            errors=tuple(self.errors),
            endpoints=tuple(e for e in self.eps if isinstance(e, Endpoint)),
        )

    def _denied(self, target: str = "it") -> str:
        if self.private:
            return "with --socket the service has no network (PrivateNetwork=yes)"
        return f"under IPAddressDeny=any a connect to {target} hangs (its SYNs are dropped)"

    def _unix(self, ep: Endpoint) -> None:
        where = ep.unix or "its default unix socket"
        self.notes.append(f"{ep.variable}: through {where}: no IP address needed")

    def _private_tcp(self, ep: Endpoint) -> None:
        # A unit that certainly cannot reach its database: refused rather than written
        # with a warning that scrolls by. The fixes are the user's to choose.
        fixes = []
        if ep.kind in UNIX_SOCKET_KINDS:
            hint = UNIX_SOCKET_HINTS.get(ep.kind)
            fixes.append(f"its unix socket ({hint})" if hint else "its unix socket")
        if ep.address is not None:
            fixes.append(f"--ip-address-allow {ep.entry}")
        fixes.append("--allow-outbound")
        self.errors.append(
            f"environment.{ep.variable}: connects to {ep.host} over TCP, but {self._denied()}; "
            f"use {', or '.join(fixes)}"
        )

    def _literal(self, ep: Endpoint) -> None:
        entry = ep.covered_by(self.allow)
        if entry is not None:
            self.notes.append(f"{ep.variable}: {ep.host} is allowed (IPAddressAllow={entry})")
        elif not ep.certain:
            self.notes.append(
                f"warning: {ep.variable} names {ep.host}: if the app connects there, "
                f"{self._denied()}; give --ip-address-allow {ep.entry}"
            )
        else:
            self.allow.append(ep.entry)
            reason = f"IPAddressAllow={ep.entry}: {ep.variable} connects to it"
            self.relaxed.append(reason)
            self.notes.append(reason)

    def _name(self, ep: Endpoint) -> None:
        if not ep.certain:
            self.notes.append(
                f"warning: {ep.variable} names the host {ep.host}: if the app connects there, "
                f"{self._denied()}; give --allow-outbound (or --ip-address-allow with its "
                "address and a DNS resolver's)"
            )
        elif self.user:
            # The user chose the addresses: opskit does not override that choice.
            self.notes.append(
                f"warning: {ep.variable} names the host {ep.host}: IPAddressAllow= takes "
                "addresses, so hardening.ip-address-allow must hold its address and a DNS "
                "resolver's (or use --allow-outbound)"
            )
        else:
            self.outbound = True
            reason = (
                f"no IPAddressDeny=: {ep.variable} names the host {ep.host} "
                "(IPAddressAllow= takes addresses only, and the name needs DNS)"
            )
            self.relaxed.append(reason)
            self.notes.append(reason)

    def _dependencies(self) -> None:
        if self.outbound:
            return
        if self.found.problems:
            self.notes += [f"warning: {p}" for p in self.found.problems]
        by_kind: dict[str, list[str]] = {}
        for name in sorted(self.found.names):
            kind = DEPENDENCIES.get(name)
            if kind:
                by_kind.setdefault(kind, []).append(name)
        seen = {ep.kind for ep in self.eps if isinstance(ep, Endpoint) and ep.certain}
        if "database" in seen:
            seen.update(k for k in UNIX_SOCKET_KINDS)
        for kind, names in by_kind.items():
            if kind in seen:
                continue
            what = KIND_NAMES[kind]
            subject = (
                f"{names[0]} ({what}) is a dependency"
                if len(names) == 1
                else f"{', '.join(names)} ({what.removeprefix('a ').removeprefix('an ')}s) "
                "are dependencies"
            )
            if kind in ("http", "cloud"):
                self.notes.append(
                    f"warning: {subject}: {self._denied('another host')} "
                    "until the client's timeout, and a host name needs DNS; if the app "
                    "connects out, give --ip-address-allow ADDR or --allow-outbound"
                )
                continue
            unix = "; its unix socket works as is" if kind in UNIX_SOCKET_KINDS else ""
            over = "over TCP, even to 127.0.0.1," if self.private else "over TCP to another host"
            self.notes.append(
                f"warning: {subject}, and no URL in the environment says where it connects: "
                f"{over} it needs --ip-address-allow ADDR (a host name: --allow-outbound){unix}"
            )


def network_needs(spec: AppSpec, project: Path) -> NetworkDecision:
    """The decision for ``spec`` with the warnings from the dependencies found in ``project``."""
    return decide(spec, dependencies(spec, project))
