"""Chapter 00's numbers at full scale: the data sets and the pixel 1-NN baseline.

    .venv/bin/python benchmarks/baselines.py [--episodes 600]

Prints (and writes benchmarks/out/baselines.md): the glyph set's alphabets, classes and build
time; 5-way 1-shot, 5-way 5-shot and 20-way 1-shot pixel 1-NN accuracy (mean ± 95% interval) on the
glyph set's evaluation alphabets and, when OMNIGLOT_DIR is set, on Omniglot's evaluation alphabets
and Lake's 20 within-alphabet runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils import glyphs, omniglot  # noqa: E402
from course_utils.baselines import pixel_nn_classify  # noqa: E402
from course_utils.evaluation import evaluate, mean_ci95  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
SETTINGS = [(5, 1), (5, 5), (20, 1)]


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=600)
    args = ap.parse_args(argv)
    lines = ["# Chapter 00 baselines", "",
             f"Command: `.venv/bin/python benchmarks/baselines.py --episodes {args.episodes}`  ",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", ""]

    with tempfile.TemporaryDirectory() as tmp:  # a cold build, timed
        os.environ["COURSE_CACHE"] = tmp
        t0 = time.perf_counter()
        for size in (28, 105):
            glyphs.load_glyphs("all", size)
        build_s = time.perf_counter() - t0
        os.environ.pop("COURSE_CACHE")
    allg = glyphs.load_glyphs("all", 28)
    per = {a: allg.alphabets.count(a) for a in allg.alphabet_names()}
    lines += ["## The glyph set", "",
              f"{len(per)} alphabets, {len(allg)} classes, {allg.min_examples()} drawers each; "
              f"cold build of both sizes (28 and 105 px): {build_s:.0f} s.", "",
              "| alphabet | classes | split |", "|---|---|---|"]
    lines += [f"| {a} | {n} | {'background' if a in glyphs.ALPHABETS_BACKGROUND else 'evaluation'} |"
              for a, n in per.items()]

    sets = {"glyph set, evaluation alphabets": glyphs.load_glyphs("evaluation", 28)}
    if omniglot.available():
        sets["Omniglot, evaluation alphabets"] = omniglot.load_omniglot("evaluation", 28)
    lines += ["", f"## Pixel 1-NN ({args.episodes} episodes, 15 queries per class, 28 px)", "",
              "| data | " + " | ".join(f"{n}-way {k}-shot" for n, k in SETTINGS) + " |",
              "|---|" + "---|" * len(SETTINGS)]
    for name, cs in sets.items():
        accs = [evaluate(pixel_nn_classify, cs, n, k, 15, args.episodes) for n, k in SETTINGS]
        lines.append(f"| {name} | " + " | ".join(f"{100 * a.mean:.1f} ± {100 * a.ci95:.1f}%" for a in accs) + " |")
    if omniglot.available():
        runs = omniglot.lake_runs(size=28)
        acc = mean_ci95([(pixel_nn_classify(ep) == ep.query_y).float().mean().item()
                         for ep in (r.episode() for r in runs)])
        lines += ["", f"Lake's 20 within-alphabet 20-way 1-shot runs, pixel 1-NN: "
                      f"{100 * acc.mean:.1f} ± {100 * acc.ci95:.1f}% (over the 20 runs)."]
    else:
        lines += ["", "Omniglot: " + omniglot.why_unavailable()]
    text = "\n".join(lines) + "\n"
    OUT.mkdir(exist_ok=True)
    (OUT / "baselines.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
