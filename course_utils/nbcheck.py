"""A pytest plugin for ``make check``: nbval, told where a student's failure is.

``make check NB=...`` runs nbval with ``-p course_utils.nbcheck``. The plugin

- gives nbval more time to collect a cell's output after the cell has finished
  (``$COURSE_NBVAL_OUTPUT_TIMEOUT`` seconds, default 120; nbval's own is 5). A cell
  that trained with progress bars leaves a backlog of widget messages, and on a busy
  machine reading it can take longer than 5 s, which nbval reported as
  "Timeout of 5 seconds exceeded waiting for output" for a correct chapter;
- names the exercise and the section of each failure. nbval's "Cell N" counts code
  cells only, which a student cannot find in JupyterLab; the plugin adds the
  exercise's number and title (from the check's message, or the nearest exercise
  cell above) and the heading of the section the cell is in, and lists the failed
  exercises once more at the end of the run.
"""
from __future__ import annotations

import os
import re

import pytest

_EXERCISE_MSG = re.compile(r"Exercise (\d+\.\d+) \(([^)]*)\): (wrong|not attempted|this name now holds)")
_EXERCISE_CELL = re.compile(r"#\s*Exercise\s+(\d+\.\d+)\s*:\s*(.+?)\s*$", re.M)
_HEADING = re.compile(r"^#{1,4}\s+(.+?)\s*$", re.M)
_FAILED: list[str] = []
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exercise_message(text: str) -> str:
    """The check's own message from a failed cell's report ('' if the failure is not a check's).

    The traceback of a failed check runs through the course's checking code, which tells the
    student nothing (and shows a check they are asked not to read), so only the message is kept.
    """
    plain = _ANSI.sub("", text)
    if "ExerciseError" not in plain:
        return ""
    message = plain.rsplit("ExerciseError:", 1)[1].strip()
    return message


def output_timeout() -> float:
    """Seconds nbval waits for a finished cell's remaining output (``$COURSE_NBVAL_OUTPUT_TIMEOUT``)."""
    value = os.environ.get("COURSE_NBVAL_OUTPUT_TIMEOUT", "120").strip()
    try:
        seconds = float(value)
    except ValueError:
        raise pytest.UsageError(f"COURSE_NBVAL_OUTPUT_TIMEOUT={value!r} is not a number of seconds.")
    if seconds <= 0:
        raise pytest.UsageError(f"COURSE_NBVAL_OUTPUT_TIMEOUT must be > 0, got {seconds}.")
    return seconds


def locate(cells: list, cell) -> dict[str, str]:
    """Where ``cell`` sits in a notebook: its section heading and the last exercise at or above it."""
    index = next((i for i, c in enumerate(cells) if c is cell), None)
    if index is None:
        return {"section": "", "exercise": ""}
    section = exercise = ""
    for c in reversed(cells[: index + 1]):
        if not exercise and c.cell_type == "code":
            found = _EXERCISE_CELL.findall(c.source)
            if found:
                title = found[-1][1].split(" (")[0].rstrip(":;,. ")  # a short title, no nested brackets
                exercise = f"Exercise {found[-1][0]} ({title})"
        if not section and c.cell_type == "markdown":
            found = _HEADING.findall(c.source)
            if found:
                section = found[-1]
        if section and exercise:
            break
    return {"section": section, "exercise": exercise}


def describe_failure(text: str, cells: list, cell, number: int) -> str:
    """One paragraph for the student: which exercise failed, and where in the notebook."""
    where = locate(cells, cell)
    named = _EXERCISE_MSG.search(text)
    place = f"in the section '{where['section']}'" if where["section"] else "in the notebook"
    if named:
        num, title, status = named.groups()
        verdict = {"wrong": "is wrong", "not attempted": "is not attempted yet"}.get(
            status, "needs its exercise cell run again")
        return (f"Exercise {num} ({title}) {verdict}: see its check cell {place} (nbval's 'Cell {number}' "
                "counts code cells only).")
    after = f", after {where['exercise']}" if where["exercise"] else ""
    return (f"A cell {place}{after} failed (nbval's 'Cell {number}' counts code cells only). If it "
            "calls a function you wrote, fix that exercise first.")


def pytest_collection_modifyitems(session, config, items):
    seconds = output_timeout()
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = seconds


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or type(item).__name__ != "IPyNbCell":
        return
    text = str(report.longrepr)
    cells = getattr(item.parent, "nb", None)
    summary = describe_failure(text, cells.cells if cells is not None else [], item.cell, item.cell_num)
    _FAILED.append(summary)
    message = exercise_message(text)
    report.longrepr = f"{summary}\n\n{message}" if message else f"{summary}\n\n{text}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _FAILED:
        return
    terminalreporter.section("what to fix (make check)")
    for line in dict.fromkeys(_FAILED):
        terminalreporter.write_line(f"- {line}")
    terminalreporter.write_line("Fix the first one first: later cells may fail only because of it.")
