"""Where the course writes what it builds or trains: glyph sets, decoded Omniglot, checkpoints.

``$COURSE_CACHE`` if set, else ``$XDG_CACHE_HOME/meta-learning-course``, else
``~/.cache/meta-learning-course``. Never beside the data (which may be read-only).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "config_key"]


def cache_dir(*parts: str) -> Path:
    """The cache folder (created), or a sub-folder of it."""
    root = os.environ.get("COURSE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "meta-learning-course")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_key(config: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
