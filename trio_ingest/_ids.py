"""Ids the framework makes up: unique across runs, processes and intakes.

A made-up id is ``"<namespace>:<run>-<n>"``: ``run`` is time-ordered (milliseconds
since the epoch, in hex) plus the process id and 32 random bits, made once per
:class:`IdMaker`, and ``n`` counts up. Two runs, two processes or two intakes of one
graph never produce the same id, so an idempotent sink never skips a new event as
a repeat. Deterministic ids (replayable positions, ``parent:i``, window ids) are
not made here; they are namespaced by the node that makes them.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time

__all__ = ("IdMaker",)


class IdMaker:
    """Unique ids under ``namespace`` (the node name), time-ordered between runs."""

    __slots__ = ("_counter", "prefix")

    def __init__(self, namespace: str) -> None:
        run = f"{time.time_ns() // 1_000_000:011x}{os.getpid():06x}{secrets.token_hex(4)}"
        self.prefix = f"{namespace}:{run}-"
        self._counter = itertools.count()

    def __call__(self) -> str:
        """The next id."""
        return f"{self.prefix}{next(self._counter)}"
