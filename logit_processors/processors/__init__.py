"""The stateless processors: one behaviour per module.

* :mod:`.temperature`: ``Temperature``, ``EntropyTemperature``;
* :mod:`.truncation`: ``TopK``, ``TopP``, ``MinP``;
* :mod:`.masking`: ``TokenMask``, ``VocabFilter`` (and ``TextPredicate``, a test it can carry in a spec);
* :mod:`.phrase_ban`: ``PhraseBan``;
* :mod:`.column_mask`: ``ColumnMask``, the kernel the masks share.
"""

from .column_mask import ColumnMask
from .masking import TextPredicate, TokenMask, VocabFilter
from .phrase_ban import PhraseBan
from .temperature import EntropyTemperature, Temperature
from .truncation import MinP, TopK, TopP

__all__ = ["ColumnMask", "EntropyTemperature", "MinP", "PhraseBan", "Temperature", "TextPredicate", "TokenMask", "TopK", "TopP", "VocabFilter"]
