"""ArcFace IR-SE50 cosine thresholds for "is this the same person".

From published ArcFace verification statistics: pairs of photos of one person mostly score above 0.45,
pairs of different people mostly below 0.32; in between the answer is "likely". The similarity report
(``infusenet/report.py``) shows the same three bands."""
from __future__ import annotations

SAME_PERSON = 0.45
"""At or above: the same person."""
LIKELY_SAME = 0.32
"""At or above (and below SAME_PERSON): likely the same person. Below: unlikely."""
