"""Optional dependencies, imported when first needed, with an error that says how to install them.

The core library needs torch, transformers, numpy and rich. Plots need matplotlib and
:meth:`~logit_processors.gaps.Trace.to_pandas` needs pandas; neither is imported until used.

Example:
    >>> Figure, FigureCanvasAgg = matplotlib_figure("this example")   # needs matplotlib
    >>> Figure.__name__
    'Figure'
"""

from __future__ import annotations

from typing import Any


def matplotlib_figure(user: str) -> tuple[type, type]:
    """``(Figure, FigureCanvasAgg)``: a figure without pyplot's global state (works headless), or
    an ImportError saying that ``user`` (e.g. ``"plot_trace()"``) needs matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"{user} needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'logit-processors[plot]')"
        ) from error
    return Figure, FigureCanvasAgg


def pandas_module(user: str) -> Any:
    """The ``pandas`` module, or an ImportError saying that ``user`` needs it."""
    try:
        import pandas
    except ImportError as error:
        raise ImportError(f"{user} needs pandas, which is not installed: pip install pandas") from error
    return pandas
