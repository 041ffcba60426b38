"""Releases (spec key ``base``): an unfinished switch, and processes serving another release."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opskit.doctor.findings import Finding, Severity

if TYPE_CHECKING:
    from opskit.doctor.checks import Context


def check_releases(ctx: Context) -> list[Finding]:
    """What the release layout says against what the service's processes run from."""
    spec = ctx.spec
    if spec.base is None:
        return []
    from pathlib import Path

    from opskit.deploy.layout import Layout
    from opskit.deploy.serving import unit_processes

    layout = Layout(Path(spec.base))
    out: list[Finding] = []
    journal = layout.read_journal()
    if journal is not None:
        out.append(
            Finding(
                Severity.ERROR,
                "release-journal",
                "a deploy or rollback died after writing its journal: the switch is unverified",
                f"{layout.journal}: {journal.get('from')} -> {journal.get('to')}",
                "run opskit releases (or deploy) as root: it keeps the new release if it "
                "serves, else switches back",
            )
        )
    live = layout.live()
    if live is None:
        if layout.ids():
            out.append(
                Finding(
                    Severity.ERROR,
                    "release-live",
                    f"{layout.current} points at no release",
                    f"releases: {', '.join(layout.ids())}",
                    "opskit rollback ID",
                )
            )
        return out
    stale = [p for p in unit_processes(layout, f"{spec.name}.service") if p.release != live]
    if stale:
        where = ", ".join(f"pid {p.pid} in {p.release or p.cwd}" for p in stale)
        out.append(
            Finding(
                Severity.ERROR,
                "stale-release",
                f"processes of {spec.name}.service serve from another release than the live "
                f"one ({live})",
                where,
                f"opskit deploy (or opskit rollback {live}) reloads and verifies it",
            )
        )
    return out
