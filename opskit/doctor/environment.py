"""Doctor's checks of the app's environment: ``pip check`` and where its log records go."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from opskit.doctor.findings import Finding, Severity
from opskit.doctor.project import module_file

if TYPE_CHECKING:
    from opskit.doctor.checks import Context


def check_pip(ctx: Context) -> list[Finding]:
    """``pip check`` failures in the app's virtual environment."""
    from opskit.errors import OperationFailed
    from opskit.proc import SubprocessRunner
    from opskit.upgrade.installer import Installer, find_uv
    from opskit.upgrade.pipcheck import check

    python = ctx.spec.python
    installer = Installer("pip", python)
    # installer = uv builds releases without pip in their venv: uv pip check checks them.
    uv = find_uv() if ctx.spec.installer == "uv" else None
    if uv is not None:
        installer = Installer("uv", python, uv=uv)
    if not Path(python).exists():
        return [
            Finding(
                Severity.INFO,
                "pip-check",
                "the app's environment is not on this host; pip check skipped",
                f"{python}: not found",
                "run doctor where the app is deployed, or pass --venv",
            )
        ]
    try:
        problems = check(installer, runner=SubprocessRunner())
    except OperationFailed as exc:
        return [
            Finding(
                Severity.WARNING, "pip-check", f"{installer.command} check could not run",
                str(exc), "",
            )
        ]  # fmt: skip
    if not problems:
        return []
    return [
        Finding(
            Severity.ERROR,
            "pip-check",
            "installed packages do not satisfy each other's requirements",
            "; ".join(p.line for p in problems),
            "install the versions the requirements ask for (opskit upgrade runs pip check "
            "after every change); pip itself exits 0 even when it leaves conflicts",
        )
    ]


def check_logging_setup(ctx: Context) -> list[Finding]:
    """Where the app's log records go: opskit.logconfig.check loads the config or the app.

    The target is the spec's log-config when it exists on this host, else the app's own
    module (its import-time logging setup), loaded by the app's interpreter when present.
    """
    from opskit.errors import OpskitError
    from opskit.logconfig.build import app_package
    from opskit.logconfig.check import Target, check_logging, relevant_loggers

    spec, project = ctx.spec, ctx.project
    roots = [project, Path(spec.working_directory)]
    path = [str(r) for r in roots if r.is_dir()]
    if spec.log_config and Path(spec.log_config).is_file():
        target = Target("file", spec.log_config)
        path.insert(0, str(Path(spec.log_config).parent))
    elif spec.app and module_file(spec.app, roots) is not None:
        target = Target("module", spec.app)
    else:
        return []
    python = spec.python if Path(spec.python).exists() else sys.executable
    loggers = relevant_loggers(app_package(spec), [n for n, _ in spec.loggers])
    try:
        result = check_logging(target, python=python, loggers=loggers, path=path, cwd=project)
    except OpskitError as exc:
        return [
            Finding(
                Severity.WARNING,
                "logging",
                f"the logging check could not load {target.value}",
                str(exc),
                f"opskit logging check {target.value}",
            )
        ]
    return [
        Finding(
            Severity.WARNING,
            "logging",
            f"{item.logger or target.value}: log records go astray",
            f"loading {target.value}: {item.message}",
            "use a config from 'opskit logging init' (log-config in the spec); "
            f"details: opskit logging check {target.value}",
        )
        for item in result.findings
    ]
