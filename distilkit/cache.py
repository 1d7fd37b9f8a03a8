"""Where distilkit keeps what it can rebuild: decoded sources, expert trajectories, real-data models,
Hub downloads. One root for all of them, so one variable moves (or clears) every cache."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DISTILKIT_CACHE"


def cache_dir() -> Path:
    """Root of distilkit's caches: ``$DISTILKIT_CACHE``, else ``$HF_HOME/distilkit`` (HF_HOME defaults to
    ``~/.cache/huggingface``). Read on every call, so a changed variable takes effect at once."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(hf_home) / "distilkit"
