"""A tiny WSGI and ASGI app with /health and /version, stdlib only.

The version is read once, at import time, from VERSION beside this file (or the file
DEMOAPP_VERSION_FILE names): a server that has not re-imported the code keeps answering
the old version, which is exactly what reload tests need to see. The file may be copied
anywhere and served as ``demoapp:app`` (WSGI) or ``demoapp:asgi`` (ASGI).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("demoapp")

_VERSION_FILE = Path(os.environ.get("DEMOAPP_VERSION_FILE", Path(__file__).with_name("VERSION")))
try:
    VERSION = _VERSION_FILE.read_text(encoding="utf-8").strip() or "0"
except OSError:
    VERSION = "0"

if os.environ.get("DEMOAPP_FAIL_IMPORT"):
    raise RuntimeError("demoapp: DEMOAPP_FAIL_IMPORT is set (a simulated broken deploy)")


def _respond(path: str) -> tuple[str, bytes]:
    if path == "/health":
        return "200 OK", b"ok\n"
    if path == "/version":
        return "200 OK", f"{VERSION}\n".encode()
    if path == "/pid":
        return "200 OK", f"{os.getpid()}\n".encode()
    if path == "/log":
        log.info("demoapp info line")
        log.warning("demoapp warning line")
        return "200 OK", b"logged\n"
    if path == "/":
        body = json.dumps({"app": "demoapp", "version": VERSION}).encode() + b"\n"
        return "200 OK", body
    return "404 Not Found", b"not found\n"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI entry point."""
    status, body = _respond(environ.get("PATH_INFO") or "/")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    """ASGI entry point."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    status, body = _respond(scope.get("path") or "/")
    await send(
        {
            "type": "http.response.start",
            "status": int(status.split()[0]),
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
