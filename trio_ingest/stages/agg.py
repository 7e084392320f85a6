"""Ready aggregations for windows (``ti.agg``); ``combine`` runs several at once."""

from ._agg import Agg as Agg
from ._agg import collect as collect
from ._agg import combine as combine
from ._agg import count as count
from ._agg import max as max
from ._agg import mean as mean
from ._agg import min as min
from ._agg import reduce as reduce
from ._agg import sum as sum

__all__ = ("Agg", "collect", "combine", "count", "max", "mean", "min", "reduce", "sum")
