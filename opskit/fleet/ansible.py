"""``opskit ansible``: a health-gated rolling deploy of the app's releases, as Ansible files.

One self-contained directory rather than a role: the files are generated from the spec
and regenerated, never edited, so a role's reuse across playbooks buys nothing, and one
directory reads top to bottom (deploy.yml, rollback.yml, the defaults they share in
group_vars/all.yml, an example inventory and an ansible.cfg, the spec each host's opskit reads,
and the units). Every value opskit writes into YAML is ``!unsafe`` (opskit.render), so
Ansible never templates it. No secret is written: the environment file a spec names
stays on the host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opskit.errors import SpecError
from opskit.render import RenderedFile, render_template
from opskit.spec import AppSpec

#: Where each host keeps opskit's venv, the pushed wheels and the app's wheel and lock.
HOST_DIR = "/var/lib/opskit/{name}"
#: The spec opskit deploy reads on each host.
HOST_CONFIG = "/etc/opskit/{name}.toml"
PLAYBOOKS = ("deploy.yml", "rollback.yml")
INVENTORY = "inventory.example.yml"
#: The playbooks' defaults: beside them, below an inventory's host and group variables.
VARS = "group_vars/all.yml"
_LOOPBACK = ("127.", "::1", "localhost")


def group_name(name: str) -> str:
    """The inventory group of the app's hosts: its name with only letters, digits and _."""
    group = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"app_{group}" if group[:1].isdigit() else group


def _refuse(spec: AppSpec) -> None:
    if spec.base is None:
        raise SpecError("ansible: needs base (each host runs opskit deploy into BASE/releases)")
    if spec.unix_socket or spec.port is None:
        raise SpecError(
            "ansible: the gate asks each host over TCP from the controller: set port, "
            "not unix-socket"
        )
    if spec.host.startswith(_LOOPBACK):
        raise SpecError(
            f"ansible: host = {spec.host!r} is not reachable from the controller, which "
            "gates each host: set host = '0.0.0.0' (or the address the hosts serve on)"
        )


def host_spec(raw: Mapping[str, Any]) -> str:
    """The spec as TOML for opskit.toml on each host: the same keys, the same values."""
    import tomlkit

    document = tomlkit.document()
    document.add(
        tomlkit.comment("The spec of opskit deploy on each host, written by opskit ansible.")
    )
    # Plain keys first: a table would take every key after it.
    items = sorted(raw.items(), key=lambda kv: isinstance(kv[1], Mapping))
    for key, value in items:
        if value is None:
            continue
        document.add(key.replace("_", "-"), value)
    return tomlkit.dumps(document)


def render_ansible(
    spec: AppSpec, raw: Mapping[str, Any], *, project: Path, version: str
) -> list[RenderedFile]:
    """The playbooks, their vars, an example inventory, ansible.cfg, the spec and the units."""
    from opskit.systemd.units import render_units

    _refuse(spec)
    units = render_units(spec)
    lock = project / "requirements.txt"
    context = {
        "spec": spec,
        "group": group_name(spec.name),
        "version": version,
        # uv builds the releases: opskit's uv extra goes to each host with it.
        "extras": "[uv]" if spec.installer == "uv" else "",
        "project": str(project),
        "lock": str(lock) if lock.is_file() else "",
        "host_dir": HOST_DIR.format(name=spec.name),
        "host_config": HOST_CONFIG.format(name=spec.name),
        "units": [u.name for u in units],
    }
    files = [
        RenderedFile(name, render_template(f"ansible/{name}.j2", **context))
        for name in (*PLAYBOOKS, INVENTORY, "ansible.cfg")
    ]
    files.append(RenderedFile(VARS, render_template("ansible/group_vars_all.yml.j2", **context)))
    files.append(RenderedFile("opskit.toml", host_spec(raw)))
    return files + units
