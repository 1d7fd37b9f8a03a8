"""JSON that stays JSON: NaN and infinities never reach a written file.

``json.dumps`` writes ``NaN``/``Infinity`` by default, which no strict parser (the Hub's, JavaScript's,
``jq``) accepts. Where a number is legitimately undefined (the loss of a diverged step, the correlation
of a constant series), :func:`dumps` writes ``null``; everything else goes through ``allow_nan=False``,
so a new non-finite value fails loudly at the writer instead of corrupting a report.
"""

from __future__ import annotations

import math
from typing import Any


def finite(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts, lists, tuples) with every non-finite float replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return finite(obj.item())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(obj)`` with ``allow_nan=False``: undefined numbers become null."""
    import json

    return json.dumps(finite(obj), allow_nan=False, **kwargs)
