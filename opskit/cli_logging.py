"""Commands: opskit logging init / opskit logging check (registered on the shared app)."""

from __future__ import annotations
