"""Sources: where events enter a pipeline."""

from ._base import Read as Read
from ._base import Source as Source
from ._memory import FromIterable as FromIterable
from ._memory import Synthetic as Synthetic
from ._memory import from_iterable as from_iterable
from ._memory import synthetic as synthetic

__all__ = ("FromIterable", "Read", "Source", "Synthetic", "from_iterable", "synthetic")
