"""What the app depends on, as declared by its project and installed in its venv.

A client library says that the app connects somewhere, not where: the network decision
turns what ``dependencies`` finds into warnings only, never into a rule of the unit, so
the same spec gives the same unit on every machine. Nothing is imported or run: the
names come from pyproject.toml, requirements*.txt and the venv's metadata directories.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opskit.spec import AppSpec

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


def declared(project: Path) -> Dependencies:
    """The distributions ``project`` declares, their names PEP 503 normalised.

    Read from pyproject.toml's ``[project].dependencies`` (and Poetry's table) and from
    every ``requirements*.txt``.
    """
    names: set[str] = set()
    sources: list[str] = []
    problems: list[str] = []
    pyproject = project / "pyproject.toml"
    if pyproject.is_file():
        from opskit.config import toml_module

        tomllib = toml_module()
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"pyproject.toml: not read ({exc})")
        except RecursionError:
            problems.append("pyproject.toml: not read (nested too deeply)")
        else:
            listed = _table(_table(data, "project"), "dependencies", [])
            poetry = _table(_table(_table(data, "tool"), "poetry"), "dependencies")
            found = [n for n in map(_requirement_name, _strings(listed)) if n]
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
    return Dependencies(frozenset(names), tuple(sources), tuple(problems))


def _table(data: Any, key: str, default: Any = None) -> Any:
    """``data[key]`` when both are what a pyproject.toml should hold, else empty."""
    value = data.get(key) if isinstance(data, dict) else None
    kind = type(default) if default is not None else dict
    return value if isinstance(value, kind) else (default if default is not None else {})


def installed(venv: Path) -> dict[str, Path] | None:
    """The venv's installed distributions, name -> metadata directory; None without a venv.

    Read from the dist-info (and egg-info) directories' names: nothing is imported or run.
    """
    if not venv.is_dir():
        return None
    found: dict[str, Path] = {}
    for site in sorted(venv.glob("lib*/python*/site-packages")):
        for meta in (*site.glob("*.dist-info"), *site.glob("*.egg-info")):
            found[canonical(meta.name.split("-", 1)[0].removesuffix(".egg-info"))] = meta
    return found


def dependencies(spec: AppSpec, project: Path) -> Dependencies:
    """The project's declared dependencies and, where the venv exists here, its installed ones."""
    listed = declared(project)
    names, sources = set(listed.names), list(listed.sources)
    present = installed(Path(spec.venv_path))
    if present is not None:
        names.update(present)
        sources.append(f"the venv's {len(present)} installed distributions")
    return Dependencies(frozenset(names), tuple(sources), listed.problems)


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def project_dir(spec: AppSpec, cwd: Path | None = None) -> Path:
    """Where the app's dependencies are declared: its working directory, if on this machine.

    On the host that runs the service, that is the deployed code; elsewhere (a developer's
    checkout, CI) the working directory does not exist and the current directory, where
    the config file is, holds the project.
    """
    workdir = Path(spec.working_directory)
    return workdir if workdir.is_dir() else (cwd or Path.cwd())
