"""One module per resource of the emulated API; the routing table is in ``routes.py``."""

from __future__ import annotations
