"""Execute solution notebooks and save them so they read right without a kernel.

JupyterLab does not restore saved widget state, so a committed widget output shows as
its text fallback: a frozen ``maml: 0%| | 0/2500`` line, or ``interactive(children=...``.
:func:`clean` replaces every widget output by what it showed last (a progress bar's
final line, an explorer's figure), drops the saved widget state, and sets the kernel
spec to the one ipykernel installs, so that opening a notebook does not modify it.

Command line (what ``make solutions`` runs; it regenerates chapters/ afterwards)::

    python -m course_utils.run_notebooks solutions/03_maml.ipynb [more.ipynb ...]
"""
from __future__ import annotations

import argparse
import copy
import html
import re
import sys
import time
from pathlib import Path
from typing import Any

import nbformat

__all__ = ["KERNELSPEC", "WIDGET_VIEW", "clean", "problems", "execute", "main"]

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_STATE = "application/vnd.jupyter.widget-state+json"
_TAG = re.compile(r"<[^>]+>")


def _text(value: str) -> str:
    return html.unescape(_TAG.sub("", value or "")).replace("\u2007", " ").replace("\xa0", " ").strip()


def _static(model_id: str, state: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
    """The outputs a widget showed last, as plain notebook outputs ([] if there is nothing to show)."""
    model = state.get(model_id)
    if model is None or depth > 6:
        return []
    name, st = model.get("model_name", ""), model.get("state", {})
    if name == "OutputModel":
        return [copy.deepcopy(o) for o in st.get("outputs", [])]
    children = [c.removeprefix("IPY_MODEL_") for c in st.get("children", [])]
    kinds = [state.get(c, {}).get("model_name", "") for c in children]
    if name == "HBoxModel" and "FloatProgressModel" in kinds:  # a tqdm bar
        layout = state.get(st.get("layout", "").removeprefix("IPY_MODEL_"), {}).get("state", {})
        if layout.get("visibility") == "hidden" or st.get("visible") is False:
            return []  # closed with leave=False: hidden in JupyterLab too, so drop it
        # kept on screen (leave=True, or stopped by an error): its last line, as text
        parts = [_text(state[c]["state"].get("value", "")) for c, k in zip(children, kinds) if k == "HTMLModel"]
        line = " ".join(p for p in parts if p)
        return [nbformat.v4.new_output("stream", name="stderr", text=line + "\n")] if line else []
    out: list[dict[str, Any]] = []
    for c in children:
        out += _static(c, state, depth + 1)
    return out


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with widget outputs made static, no saved widget state, the standard kernel spec."""
    nb = copy.deepcopy(nb)
    state = nb.metadata.get("widgets", {}).get(_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW) if out.get("output_type") in (
                "display_data", "execute_result") else None
            if view is None:
                outputs.append(out)
                continue
            static = _static(view.get("model_id", ""), state)
            if any("image/png" in o.get("data", {}) for o in static):
                outputs.append(nbformat.v4.new_output(
                    "stream", name="stdout", text="(An interactive explorer: run the cell to move its "
                    "sliders. Below, the figure it shows first.)\n"))
            outputs += [nbformat.from_dict(o) for o in static]
        cell.outputs = _merge_streams(outputs)
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def _merge_streams(outputs: list) -> list:
    merged: list = []
    for o in outputs:
        if (merged and o.get("output_type") == "stream" and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == o.get("name")):
            merged[-1]["text"] = merged[-1]["text"] + o["text"]
        else:
            merged.append(o)
    return merged


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """What would look broken in JupyterLab without a kernel: widget outputs, reprs, frozen bars."""
    found = []
    if "widgets" in nb.metadata:
        found.append("saved widget state in the notebook's metadata")
    if nb.metadata.get("kernelspec", {}).get("display_name") != KERNELSPEC["display_name"]:
        found.append(f"kernelspec display name {nb.metadata.get('kernelspec', {}).get('display_name')!r}")
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if WIDGET_VIEW in out.get("data", {}):
                found.append(f"cell {i}: a widget output")
            text = out.get("text", "") + "".join(out.get("data", {}).get("text/plain", ""))
            if re.search(r"\b0%\|", text) or "interactive(children=" in text or re.search(r"\w+\(children=\(", text):
                found.append(f"cell {i}: a frozen progress bar or widget repr: {text.strip()[:60]!r}")
    return found


def execute(path: Path, timeout: int = 600) -> float:
    """Run the notebook top to bottom in its own folder, save it cleaned; return the seconds taken."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - t0
    nbformat.write(clean(nb), path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--no-chapters", action="store_true", help="do not regenerate chapters/")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"running {path} ...", flush=True)
        print(f"  {execute(path):.0f} s; saved", flush=True)
    if not args.no_chapters:
        from . import exercises
        root = args.notebooks[0].resolve().parent
        exercises.generate(root, root.parent / "chapters")
        print("chapters/ regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
