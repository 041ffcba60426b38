"""The HTTP client the harness runs inside a container (stdlib only, Debian's python3).

Every command prints one JSON line on stdout, last, so the harness can parse it:

    inside.py get URL [--timeout S]              one GET
    inside.py wait URL [--timeout S] [--body B]  poll until 200 (and body B); seconds taken
    inside.py load URL --seconds S --clients N --rate R [--stop-file F]
                                                 bounded load: N clients, at most R
                                                 requests/s each, for S seconds (or until
                                                 F exists), a new connection per
                                                 request; prints "started" first, then
                                                 the counts of ok and failed
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse
from pathlib import Path


def _get(url: str, timeout: float) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        # Connection: close, so a server that closes keep-alive connections anyway
        # (uWSGI's http-socket) is not counted as resetting them.
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def get(url: str, timeout: float) -> dict[str, object]:
    started = time.monotonic()
    try:
        status, body = _get(url, timeout)
    except (OSError, http.client.HTTPException) as exc:
        return {"status": 0, "body": "", "seconds": time.monotonic() - started, "error": repr(exc)}
    return {"status": status, "body": body, "seconds": time.monotonic() - started}


def wait(url: str, timeout: float, body: str | None) -> dict[str, object]:
    started = time.monotonic()
    last: dict[str, object] = {}
    while time.monotonic() - started < timeout:
        last = get(url, 2.0)
        if last["status"] == 200 and (body is None or str(last["body"]).strip() == body):
            return {"ok": True, "seconds": time.monotonic() - started, "body": last["body"]}
        time.sleep(0.02)
    return {"ok": False, "seconds": time.monotonic() - started, "last": last}


def load(
    url: str, seconds: float, clients: int, rate: float, stop_file: str | None = None
) -> dict[str, object]:
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0}
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds
    pause = 1.0 / rate

    def client() -> None:
        # Bounded in time and, through the pause, in count: at most seconds * rate each;
        # sooner when the stop file appears.
        while time.monotonic() < stop_at and not (stop_file and Path(stop_file).exists()):
            began = time.monotonic()
            try:
                status, _ = _get(url, 10.0)
                kind = None if status == 200 else f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                kind = type(exc).__name__
            with lock:
                if kind is None:
                    counts["ok"] += 1
                else:
                    counts["failed"] += 1
                    errors[kind] = errors.get(kind, 0) + 1
            time.sleep(max(0.0, pause - (time.monotonic() - began)))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    print("started", flush=True)
    for thread in threads:
        thread.join(seconds + 30)
    return {**counts, "errors": errors}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_get = sub.add_parser("get")
    p_get.add_argument("url")
    p_get.add_argument("--timeout", type=float, default=10.0)
    p_wait = sub.add_parser("wait")
    p_wait.add_argument("url")
    p_wait.add_argument("--timeout", type=float, default=60.0)
    p_wait.add_argument("--body")
    p_load = sub.add_parser("load")
    p_load.add_argument("url")
    p_load.add_argument("--seconds", type=float, required=True)
    p_load.add_argument("--clients", type=int, default=4)
    p_load.add_argument("--rate", type=float, default=50.0)
    p_load.add_argument("--stop-file")
    args = parser.parse_args(argv)
    if args.cmd == "get":
        result = get(args.url, args.timeout)
    elif args.cmd == "wait":
        result = wait(args.url, args.timeout, args.body)
    else:
        result = load(args.url, args.seconds, args.clients, args.rate, args.stop_file)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
