"""One matplotlib session at a time, for every chart this process draws.

Why a lock and not only ``Figure`` objects: shap's waterfall draws through
pyplot's current figure, and matplotlib keeps process-wide state besides
(rcParams, which ``rc_context`` changes for the whole process, and the
mathtext parser, which fails on concurrent use: a replay report's chart
rendering beside an explanation chart made ``$E[f(X)]$`` unparsable). Every
renderer (the explanation waterfall, the replay report's score chart) enters
:func:`chart_session`, so charts are drawn one after another; each takes
milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType  # matplotlib itself is imported only when a chart is drawn

__all__ = ["chart_session"]

_LOCK = threading.RLock()


@contextmanager
def chart_session(style: Mapping[RcKeyType, Any] | None = None) -> Iterator[Any]:
    """Hold the process's chart lock with the headless Agg backend and ``style``
    applied; yields ``matplotlib.pyplot``. Close every figure before leaving."""
    # lazy: matplotlib only when a chart is drawn (replay reports load this module)
    import matplotlib

    with _LOCK:
        # lazy: pyplot first imported under the chart lock (its import sets global state)
        import matplotlib.pyplot as plt

        if matplotlib.get_backend().lower() != "agg":
            plt.switch_backend("agg")
        with matplotlib.rc_context(dict(style or {})):
            yield plt
