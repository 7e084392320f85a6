"""Keyed event-time windows (``ti.windows``): ``tumbling``, ``sliding``, ``session``."""

from ._windows import LateEventError as LateEventError
from ._windows import Reorder as Reorder
from ._windows import Watermark as Watermark
from ._windows import WindowStage as WindowStage
from ._windows import reorder as reorder
from ._windows import session as session
from ._windows import sliding as sliding
from ._windows import tumbling as tumbling

__all__ = (
    "LateEventError",
    "Reorder",
    "Watermark",
    "WindowStage",
    "reorder",
    "session",
    "sliding",
    "tumbling",
)
