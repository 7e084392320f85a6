"""The exception tree of trio_ingest.

Every error a user can meet derives from :class:`IngestError`, so one ``except``
clause catches them all; the subclasses say *where* it happened.
"""

from __future__ import annotations

__all__ = (
    "ConfigError",
    "DeadLetterError",
    "GraphError",
    "IngestError",
    "InvalidPayloadError",
    "NotJsonError",
    "PermanentError",
    "RetryExhaustedError",
    "SinkError",
    "SourceError",
    "StageError",
    "TransientError",
)


class IngestError(Exception):
    """Base class of every trio_ingest error."""


class ConfigError(IngestError, ValueError):
    """A value given to trio_ingest is invalid; raised before any data moves."""


class GraphError(ConfigError):
    """A pipeline or graph is malformed (cycle, dangling node, duplicate name...)."""


class SourceError(IngestError):
    """A source failed to open, read or commit."""


class SinkError(IngestError):
    """A sink failed to write; base of :class:`TransientError` and :class:`PermanentError`."""


class TransientError(SinkError):
    """A failure worth retrying (lost connection, timeout, overload)."""


class PermanentError(SinkError):
    """A failure retrying cannot fix (constraint violation, bad data)."""


class NotJsonError(PermanentError, ValueError):
    """A value cannot be written as JSON: NaN or infinity, or a type JSON has no form for.

    A data error: the runtime dead-letters the event (retrying cannot help).
    """


class StageError(IngestError):
    """A stage function failed and no dead-letter sink was configured to take the event.

    The original exception is the ``__cause__``.
    """

    def __init__(self, node: str, event_id: str, error: BaseException) -> None:
        super().__init__(
            f"stage {node!r} failed on event {event_id!r}: {type(error).__name__}: {error}"
        )
        self.node = node
        self.event_id = event_id


class RetryExhaustedError(IngestError):
    """Every attempt a retry policy allowed has failed; the last error is the ``__cause__``."""

    def __init__(self, node: str, attempts: int, error: BaseException) -> None:
        super().__init__(
            f"{node!r} gave up after {attempts} attempt(s): {type(error).__name__}: {error}"
        )
        self.node = node
        self.attempts = attempts


class DeadLetterError(IngestError):
    """An event had to be dead-lettered but there is no dead-letter sink, or it failed.

    Raised instead of dropping the event: trio_ingest never loses an event silently.
    """

    def __init__(self, node: str, event_id: str, reason: str, *, configured: bool = False) -> None:
        hint = "" if configured else "; configure dead_letter=... to keep the run going"
        super().__init__(f"{node!r} could not dead-letter event {event_id!r} ({reason}){hint}")
        self.node = node
        self.event_id = event_id


class InvalidPayloadError(IngestError, ValueError):
    """A payload does not match the schema of a ``validate`` stage (a data error: never retried).

    Attributes:
        path: Where it fails, in the JSONPath form ``$.items[3].price`` (``$``: the payload).
        reason: What is wrong there (``expected float, got "12,5"``).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
