"""How opskit starts uvicorn: with an HTTP protocol whose shutdown drops no request.

uvicorn 0.55's H11Protocol.shutdown() closes, when a worker retires, every connection
without a request in progress, including one accepted in the same event-loop turn whose
request is already in the kernel's buffer; that request meets a reset (measured in
docs/benchmarks/reload.md: 9 failed requests over 14 reloads under load, 0 with this
protocol). No option of uvicorn reaches it, so the unit runs uvicorn's own ``main()``
from a short bootstrap (templates/systemd/uvicorn_boot.py) that makes the protocol
(templates/systemd/uvicorn_drain.py) importable in the master and in every worker, and
passes ``--http opskit_uvicorn:DrainingH11Protocol``. Nothing is installed into the venv:
the unit carries the code, as the watchdog's does. ``--http`` in ``server-args`` comes
later on the command line and wins (click takes the last one).
"""

from __future__ import annotations

from opskit.render import templates_dir
from opskit.spec import AppSpec

#: The value of uvicorn's --http that the bootstrap makes importable.
PROTOCOL = "opskit_uvicorn:DrainingH11Protocol"
#: A word of the bootstrap that tells doctor this ``python -c`` is uvicorn.
MARKER = "from uvicorn.main import main"


def boot_code() -> str:
    """The ``-c`` code: the protocol's source as SOURCE, then the bootstrap."""
    folder = templates_dir() / "systemd"
    source = (folder / "uvicorn_drain.py").read_text(encoding="utf-8")
    boot = (folder / "uvicorn_boot.py").read_text(encoding="utf-8")
    return f"SOURCE = {source!r}\n{boot}"


def launcher(spec: AppSpec) -> list[str]:
    """The words before uvicorn's own arguments (the app path first among them)."""
    return [spec.python, "-c", boot_code()]


def is_boot(argv: tuple[str, ...] | list[str]) -> bool:
    """Whether a command line is this bootstrap (``python -c CODE ...``)."""
    return len(argv) >= 3 and argv[1] == "-c" and MARKER in argv[2]
