"""Commands: opskit makefile, opskit bundle and opskit doctor (registered on the shared app)."""

from __future__ import annotations
