"""The stateless processors: one behaviour per module.

* :mod:`.temperature`: ``Temperature``, ``EntropyTemperature``;
* :mod:`.truncation`: ``TopK``, ``TopP``, ``MinP``;
* :mod:`.masking`: ``TokenMask``, ``VocabFilter``;
* :mod:`.phrase_ban`: ``PhraseBan``;
* :mod:`.column_mask`: ``ColumnMask``, the kernel the masks share.
"""

from .column_mask import ColumnMask
from .masking import TokenMask, VocabFilter
from .phrase_ban import PhraseBan
from .temperature import EntropyTemperature, Temperature
from .truncation import MinP, TopK, TopP

__all__ = ["ColumnMask", "EntropyTemperature", "MinP", "PhraseBan", "Temperature", "TokenMask", "TopK", "TopP", "VocabFilter"]
