"""On a real systemd: the unit's server logs through the generated config into the journal.

What only the journal can show: the ``<N>`` prefix becomes the entry's PRIORITY, so
``journalctl -p warning`` keeps the app's WARNING and drops its INFO, and each record is
one entry without a second timestamp.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from opskit.logconfig.build import render_logging
from opskit.systemd.units import render_units
from tests.real_systemd.demo import demo_spec, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

CONF_DIR = "/etc/demo-logging"
ACCESS = {"gunicorn": '"GET /log HTTP/1.1" 200', "uvicorn": '"GET /log HTTP/1.1" 200'}


def _messages(entries: list[dict], needle: str) -> list[dict]:
    return [e for e in entries if isinstance(e.get("MESSAGE"), str) and needle in e["MESSAGE"]]


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_journal_priorities_follow_levels(server: str, boot, tmp_path: Path) -> None:
    spec = demo_spec(server, name="demo", log_config=f"{CONF_DIR}/logging.json")
    conf = tmp_path / "conf"
    conf.mkdir(mode=0o755)
    for file in render_logging(spec):
        (conf / file.name).write_text(file.content)
        (conf / file.name).chmod(0o644)
    box = boot(f"log-{server}")
    box.copy_in(conf, CONF_DIR)
    box.install_units(render_units(spec))
    box.systemctl("start", "demo.service")
    box.wait_http(url("/health"), timeout=60)
    assert box.http_get(url("/log")).status == 200

    def logged() -> bool:
        return bool(_messages(box.journal_json("demo.service"), "demoapp warning line"))

    box.wait_for("the app's warning in the journal", logged, timeout=30)
    time.sleep(0.5)  # the access line follows the response
    entries = box.journal_json("demo.service")
    journal = box.journal("demo.service")

    (info,) = _messages(entries, "demoapp info line")
    (warning,) = _messages(entries, "demoapp warning line")
    assert info["PRIORITY"] == "6", journal
    assert warning["PRIORITY"] == "4", journal
    for entry in (info, warning):
        # journald took the prefix; the message carries no timestamp of its own.
        assert not entry["MESSAGE"].startswith("<")
        assert not re.search(r"\d\d:\d\d:\d\d", entry["MESSAGE"]), entry["MESSAGE"]
    if server in ACCESS:
        (access,) = _messages(entries, ACCESS[server])
        assert access["PRIORITY"] == "6"

    filtered = box.run(
        "journalctl", "--no-pager", "-u", "demo.service", "-p", "warning", "-o", "cat"
    ).stdout
    assert "demoapp warning line" in filtered
    assert "demoapp info line" not in filtered
