"""``opskit doctor``: the registry of checks, run in order over what was read once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opskit.doctor.environment import check_logging_setup, check_pip
from opskit.doctor.findings import Finding, Report, Severity
from opskit.doctor.live import (
    check_app,
    check_denied_network,
    check_live_units,
    check_memory_growth,
    check_port_holder,
)
from opskit.doctor.processes import (
    Listener,
    check_shared_port,
    listeners,
)
from opskit.doctor.project import check_del_methods, check_uwsgi_threads, newest_source
from opskit.doctor.releases import check_releases
from opskit.doctor.stale import check_stale_code, plan_fix
from opskit.doctor.units import UnitFile, check_units, read_unit_files, unit_paths
from opskit.spec import AppSpec


@dataclass(frozen=True)
class Context:
    """What the checks look at, read once: the spec, the project, its units, the servers."""

    spec: AppSpec
    project: Path
    unit_files: tuple[UnitFile, ...]
    #: The servers on the app's port or unix socket (none looked for without either).
    listeners: tuple[Listener, ...]
    #: The project's most recently changed source file, when some server may be older.
    newest_source: tuple[Path, float] | None


def read_context(spec: AppSpec, *, project: Path, units: Sequence[Path] | None) -> Context:
    """Read the unit files and find the servers: what every check then shares."""
    project = project.resolve()
    found = tuple(listeners(spec)) if spec.port is not None or spec.unix_socket else ()
    return Context(
        spec=spec,
        project=project,
        unit_files=read_unit_files(unit_paths(spec, project, units), project),
        listeners=found,
        newest_source=newest_source(project) if found else None,
    )


Check = Callable[[Context], list[Finding]]

#: The checks, in the order they run; findings of one severity are listed in this order.
#: A new check is one more line here (docs/doctor.md lists what each one reports).
CHECKS: tuple[tuple[str, Check], ...] = (
    ("unit files", check_units),
    ("units as systemd runs them", check_live_units),
    ("a running service's memory growing", check_memory_growth),
    ("the app's port held by another process", check_port_holder),
    ("the app imports as the service runs it", check_app),
    ("a network the sandbox blocks", check_denied_network),
    ("uWSGI threads at import", check_uwsgi_threads),
    ("servers sharing the address", check_shared_port),
    ("servers older than the code", check_stale_code),
    ("releases and what serves them", check_releases),
    ("__del__ methods", check_del_methods),
    ("logging setup", check_logging_setup),
    ("pip check", check_pip),
)

_RANK = {severity: rank for rank, severity in enumerate(Severity)}


def diagnose(spec: AppSpec, *, project: Path, units: Sequence[Path] | None = None) -> Report:
    """Run every check against this host and project: errors first, then warnings, then info."""
    ctx = read_context(spec, project=project, units=units)
    findings = [finding for _, check in CHECKS for finding in check(ctx)]
    findings.sort(key=lambda f: _RANK[f.severity])
    return Report(findings, plan_fix(ctx))
