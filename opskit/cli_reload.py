"""Commands: opskit reload-script (registered on the shared app)."""

from __future__ import annotations
