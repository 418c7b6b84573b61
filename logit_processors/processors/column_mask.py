"""ColumnMask: the kernel that sets a fixed set of columns to ``-inf``, shared by the token masks
and the phrase ban.

Example:
    >>> import torch
    >>> removed = torch.tensor([False, True, False, False])
    >>> mask = ColumnMask(removed)
    >>> mask.method
    'cap'
    >>> mask.apply(torch.zeros(1, 4))[0].tolist()
    [[0.0, -inf, 0.0, 0.0]]
"""

from __future__ import annotations

import torch

from ..numerics import NEG_INF
from ..validate import per_row


class ColumnMask:
    """A fixed set of columns to remove (set to ``-inf``), applied by the cheapest exact method.

    Three ways give identical results; what they cost depends on how many columns they touch:

    * few removed columns, ``"fill"``: copy the scores, then ``index_fill_`` those columns:
      one copy plus a scattered write per removed column and row;
    * few kept columns, ``"keep"``: start from an all ``-inf`` tensor (writes only), gather the
      kept columns and copy them in: a scattered read and write per kept column and row;
    * otherwise, ``"cap"``: ``torch.minimum(scores, cap)`` with a cached row that is ``+inf``
      where kept and ``-inf`` where removed: one vectorized pass over three streams. A bool
      ``masked_fill`` or ``where`` does the same several times slower on CPU (their bool kernels
      are not vectorized), which is why none of the paths uses them. ``minimum`` rather than
      adding a 0 / ``-inf`` bias: ``+inf + -inf`` would be NaN.

    The rule: a scattered method only when it touches at most :data:`SCATTERED_FRACTION`
    (1/256) of a row, else ``"cap"``. It rests on what holds on every machine, not on timings of
    one: a scattered access costs a whole cache line or memory transaction (16 to 32 elements'
    worth of streaming), so scattering 1/256 of a row costs at most about a tenth of a streamed
    pass, less than the cap pass's extra stream; at a larger fraction the cap pass is close to
    the best method wherever the scores live. ``benchmarks/run.py`` measures the three methods
    across fractions on the machine it runs on and reports the rule's choice against the
    fastest (``mask_rule`` in its JSON). ``method=`` forces one (tests compare the three).

    ``removed`` is a bool ``[V]`` mask (the same columns in every row) or ``[n, V]`` (one mask
    per row, or per prompt; see :func:`~logit_processors.validate.per_row`, always ``"cap"``),
    built for scores of exactly ``V`` columns. Index tensors and caps are cached per (method,
    device, dtype).

    :meth:`apply` also returns a *witness* for the fully-masked-row check (see
    :meth:`~logit_processors.core.MaskingProcessor.finish`): the kept values themselves when
    they are few, else one column that no row removes.
    """

    METHODS = ("fill", "keep", "cap")
    #: The scattered methods are used only when they touch at most this fraction of a row.
    SCATTERED_FRACTION = 1 / 256

    def __init__(self, removed: torch.Tensor, method: str | None = None):
        if method is not None and method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS} or None; got {method!r}")
        self.removed = removed
        kept_anywhere = ~removed if removed.dim() == 1 else ~removed.any(dim=0)
        kept_columns = kept_anywhere.nonzero().flatten()
        self.witness_column = int(kept_columns[0]) if len(kept_columns) else None
        if removed.dim() == 2:
            method = "cap"
        self.method = method if method is not None else self.method_for_fraction(int(removed.sum()) / removed.shape[-1])
        self._tables: dict[tuple, torch.Tensor] = {}

    @classmethod
    def method_for_fraction(cls, removed_fraction: float) -> str:
        """The method for a mask that removes this fraction of a row's columns (the rule above)."""
        if removed_fraction <= cls.SCATTERED_FRACTION:
            return "fill"
        if 1.0 - removed_fraction <= cls.SCATTERED_FRACTION:
            return "keep"
        return "cap"

    def apply(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(new scores with the columns removed, witness or None)``."""
        # This runs at every generation step: one dict lookup, one or three tensor ops.
        method = self.method
        key = (method, scores.device, scores.dtype)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = self._table(method, scores)
        if method == "keep":  # table: the kept column ids
            values = scores.index_select(1, table)
            return torch.full_like(scores, NEG_INF).index_copy_(1, table, values), values
        if method == "fill":  # table: the removed column ids
            out = scores.clone().index_fill_(1, table, NEG_INF)
        else:  # table: the cap row(s)
            out = torch.minimum(scores, table if table.dim() == 1 else per_row("per-row mask", table, scores.shape[0]))
        return out, (None if self.witness_column is None else out.select(1, self.witness_column))

    def _table(self, method: str, scores: torch.Tensor) -> torch.Tensor:
        if method == "keep":
            table = (~self.removed).nonzero().flatten()
        elif method == "fill":
            table = self.removed.nonzero().flatten()
        else:
            inf = torch.tensor(float("inf"))
            return torch.where(self.removed, -inf, inf).to(device=scores.device, dtype=scores.dtype)
        return table.to(scores.device)
