"""State stores and checkpoint epochs: ``ti.state.SQLite(path)``, ``ti.state.Memory()``.

``Pipeline(..., state=ti.state.SQLite("state.db"))`` makes the runtime take a
consistent checkpoint every ``checkpoint_interval`` seconds and at a graceful
stop: the state of every stateful stage and the offset of every source, in one
transaction. A restarted run restores both, so a crash replays into the same
results. See ``docs/guide/state.md``.
"""

from ._store import Checkpoint as Checkpoint
from ._store import Memory as Memory
from ._store import SQLite as SQLite
from ._store import StateError as StateError
from ._store import StateStore as StateStore
from ._store import decode as decode
from ._store import encode as encode

__all__ = ("Checkpoint", "Memory", "SQLite", "StateError", "StateStore", "decode", "encode")
