"""Where a service's environment says it connects: endpoints read from URL-like values.

``endpoints`` reads the spec's environment (``DATABASE_URL``, ``REDIS_URL``, ``*_URL``,
``*_URI``, ``*_DSN``, ``*_HOST``, ``PGHOST``, libpq's ``key=value`` strings) and returns
one ``Endpoint`` per place the app connects to, or an ``Unreadable`` for a value that looks
like a URL but does not parse. Nothing is resolved or connected: a host name stays a name.
The decision of what the unit allows for them is ``opskit.systemd.network``'s.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def networks(entry: str) -> list[Network]:
    """The networks an IPAddressAllow= entry covers."""
    return [ipaddress.ip_network(n, strict=False) for n in WORD_NETWORKS.get(entry, (entry,))]


def _within(inner: Network, outer: Network) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False
