"""Speed of ``course-autolabel``: 400 unlabelled images labelled in under 10 s on CPU (rerun).

Writes a temporary folder from the glyph set's evaluation alphabets (classes the embedding never
saw): 20 classes with 1 labelled image each (``labelled/<class>/``) and an unlabelled pool of 400 PNG
files, black ink on white like Omniglot's, under shuffled names: the 19 other drawers of each class
(380 items; the glyph set has 20 drawers per character) plus 20 distractors, one image of each of 20
other classes (items that should end as none-of-these or needs-review, never as a class).

The tool runs twice as a separate process on the CPU (``--device cpu``): the first run may meta-train
the embedding (once, cached) and calibrate on meta-val (cached); the second, a rerun over the
labels.csv of the first, is the timed one: wall and CPU seconds of the whole process, Python start
and the torch import included. Prints the tool's summary and, since the truth is known here, the
measured precision of the automatic labels. Exits 1 if the timed run takes more than 10 s.

    .venv/bin/python benchmarks/autolabel_speed.py [TOOL OPTIONS...]

Any arguments are passed on to the tool (e.g. ``--checkpoint PATH`` to time a saved embedding while
course_utils is being edited: the cached default embedding is keyed on the library's source, so
every edit of a course_utils module meta-trains it again on the next run).
"""
from __future__ import annotations

import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from course_utils.glyphs import load_glyphs

LIMIT_S = 10.0
N_WAY, K_SHOT, N_DISTRACTORS = 20, 1, 20


def write_folder(root: Path, seed: int = 0) -> dict[str, str]:
    """The labelling folder; returns unlabelled path -> true class ("" for a distractor)."""
    ev = load_glyphs("evaluation")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ev), N_WAY + N_DISTRACTORS, replace=False)
    items = []
    for j, c in enumerate(chosen):
        x = ev.examples(int(c))[:, 0].numpy()
        name = f"class{j:02d}"
        if j < N_WAY:
            for i in range(K_SHOT):
                save(root / "labelled" / name / f"{i}.png", x[i])
            items += [(x[i], name) for i in range(K_SHOT, len(x))]
        else:
            items.append((x[0], ""))
    truth = {}
    for n, i in enumerate(rng.permutation(len(items))):
        rel = f"unlabelled/{n:04d}.png"
        save(root / rel, items[i][0])
        truth[rel] = items[i][1]
    return truth


def save(path: Path, ink_high: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(255 - ink_high).save(path)  # black ink on white, as Omniglot's PNGs


def tool_command() -> list[str]:
    script = Path(sys.executable).with_name("course-autolabel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "course_utils.autolabel_tool"]


def timed_run(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """(process, wall seconds, CPU seconds of the child: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def score(csv_path: Path, truth: dict[str, str]) -> str:
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    auto = [r for r in rows if r["source"] == "auto"]
    right = sum(truth[r["path"]] == r["label"] for r in auto)
    wrong_d = sum(truth[r["path"]] == "" for r in auto)
    none_d = sum(truth[r["path"]] == "" and r["source"] == "none-of-these" for r in rows)
    measured = f"{right / len(auto):.3f}" if auto else "n/a"
    return (f"measured (truth known): {right}/{len(auto)} automatic labels right (precision {measured}), "
            f"{wrong_d} distractors labelled automatically, {none_d}/{N_DISTRACTORS} distractors "
            f"none-of-these; coverage {len(auto) / len(rows):.2f} of {len(rows)} rows")


def main(extra: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="autolabel-speed-") as tmp:
        root = Path(tmp)
        truth = write_folder(root)
        cmd = [*tool_command(), str(root), "--device", "cpu", *extra]
        print(f"{len(truth)} unlabelled images, {N_WAY} classes x {K_SHOT} labelled, in {root}")
        print("first run (may train the embedding and calibrate; not timed) ...", flush=True)
        first, wall1, _ = timed_run(cmd)
        print(f"  exit {first.returncode} after {wall1:.1f} s")
        if first.returncode != 0:
            print(first.stdout, first.stderr, sep="\n")
            return 1
        second, wall, cpu = timed_run([*cmd, "--quiet"])
        print("second run (timed):")
        print(second.stdout.rstrip())
        if second.stderr.strip():
            print(second.stderr.rstrip())
        if second.returncode != 0:
            return 1
        print(score(root / "labels.csv", truth))
    verdict = "OK" if wall <= LIMIT_S else f"TOO SLOW (limit {LIMIT_S:.0f} s)"
    print(f"timed run: wall {wall:.2f} s, CPU {cpu:.2f} s for {len(truth)} images: {verdict}")
    return 0 if wall <= LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
