"""The ``redis`` group: the relay on Redis next to SQLite (scenarios a, b = S2, c of the
relay group), one vs two relay processes on one Redis, and Hocuspocus 3.4.4 with
@hocuspocus/extension-redis (one and two processes), CPU per delivery counting
Redis's own. ``python -m benchmarks --only redis``."""

from .group import run

__all__ = ["run"]
