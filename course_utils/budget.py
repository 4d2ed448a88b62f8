"""Run budgets: how long the notebooks and benchmarks train.

``COURSE_BUDGET`` selects one of

- ``smoke``: seconds; only proves that the code runs (used for the unfilled chapters in CI),
- ``quick``: the default; every notebook top to bottom in at most 3 minutes on 2 CPU cores,
- ``full``: paper scale, a GPU recommended.

Use :func:`pick` to choose a value per budget.
"""
from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")
BUDGETS = ("smoke", "quick", "full")

__all__ = ["BUDGETS", "current", "pick"]


def current() -> str:
    """The active budget name (``$COURSE_BUDGET``, default ``quick``)."""
    name = os.environ.get("COURSE_BUDGET", "quick").strip().lower() or "quick"
    if name not in BUDGETS:
        raise ValueError(f"COURSE_BUDGET={name!r} is not a budget; use one of {', '.join(BUDGETS)}.")
    return name


def pick(quick: T, full: T | None = None, smoke: T | None = None) -> T:
    """The value for the active budget; ``full`` and ``smoke`` default to ``quick``."""
    return {"quick": quick,
            "full": quick if full is None else full,
            "smoke": quick if smoke is None else smoke}[current()]
