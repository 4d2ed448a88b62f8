"""Progress bars (``tqdm.auto``: a widget in Jupyter, text in a terminal), silenced by ``COURSE_QUIET=1``."""
from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

__all__ = ["progress", "quiet"]


def quiet() -> bool:
    """True when ``$COURSE_QUIET`` asks for no progress bars."""
    return os.environ.get("COURSE_QUIET", "").strip().lower() in {"1", "true", "yes"}


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False):
    """Wrap ``iterable`` in a progress bar unless the course is asked to be quiet.

    The bar redraws at most once a second: in Jupyter every redraw is a few widget messages,
    and a long cell should not leave thousands of them behind (nbval, ``make check``, reads
    them all after the cell). Bars close without a trace (``leave=False``); the notebooks print
    a summary line of their own.
    """
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=quiet(), mininterval=1.0)
