"""Chapter 07's five measurements of automatic labelling, with more pools than the notebook, on one source.

    .venv/bin/python benchmarks/autolabel_measurements.py --source glyphs
    OMNIGLOT_DIR=../shared/data/omniglot .venv/bin/python benchmarks/autolabel_measurements.py --source omniglot
    .venv/bin/python benchmarks/autolabel_measurements.py --report     # merge both into autolabel.md

Writes benchmarks/out/autolabel_<source>.json and figures; ``--report`` writes benchmarks/out/autolabel.md
(copied into the README by benchmarks/readme_results.py). The embedding is the chapter's (quick budget,
``labelling_data.pretrained_encoder``, cached). Prints wall and CPU time.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"

import torch  # noqa: E402

from course_utils import labelling_study as study  # noqa: E402
from course_utils.devices import describe_device, pick_device  # noqa: E402
from course_utils.labelling_data import embed_classes, labelling_data, pretrained_encoder  # noqa: E402


def _acc(a) -> dict | None:
    return None if a is None else {"mean": a.mean, "ci95": a.ci95, "n": a.n}


def measure(source: str, n_pools: int, n_runs: int) -> dict:
    device = pick_device()
    data = labelling_data(source)
    enc = pretrained_encoder(data, device)
    VAL, NEW = embed_classes(enc, data.val), embed_classes(enc, data.new)
    out: dict = {"meta": {"source": data.source, "device": describe_device(device), "pools": n_pools,
                          "runs": n_runs, "torch": torch.__version__, "machine": platform.machine(),
                          "date": time.strftime("%Y-%m-%d"), "val_classes": len(VAL), "new_classes": len(NEW)}}
    # 1 + 2: threshold for 99% precision on meta-val, coverage and precision on the new alphabets; ECE
    out["acceptance"] = {}
    cal1 = None
    for k in (1, 5):
        val = study.sample_pools(VAL, 5, k, 15, n_pools, seed=1)
        new = study.sample_pools(NEW, 5, k, 15, n_pools, seed=2)
        cal = study.calibrate(val, 0.99)
        cal1 = cal if k == 1 else cal1
        res = study.acceptance(new, cal)
        ece = study.calibration_errors(new, cal.temperature)
        sup = study.support_set_threshold(new, cal.temperature)
        wrong = study.acceptance(new, study.Calibration(cal.temperature, sup, cal.radius, 0.99))
        out["acceptance"][k] = {"calibration": cal.as_dict(), "coverage": _acc(res["coverage"]),
                                "precision_pooled": res["precision_pooled"], "gap": res["gap"],
                                "ece_before": _acc(ece["before"]), "ece_after": _acc(ece["after"]),
                                "support_tau": sup, "support_tau_precision": wrong["precision_pooled"],
                                "support_tau_coverage": _acc(wrong["coverage"])}
    # 3: accuracy vs M
    ms = [1, 2, 5, 10, 15, 19]
    out["vs_m"] = {}
    vs = {}
    for h in (0, 5):
        vs[h] = study.accuracy_vs_m(NEW, ms, 5, 1, n_pools, radius=cal1.radius, n_distractors=h)
        out["vs_m"][h] = {name: {m: _acc(a) for m, a in r.items()} for name, r in vs[h].items()}
    study.plot_accuracy_vs_m(vs, title=f"{data.source}: 5-way 1-shot, refining prototypes with the pool").savefig(
        OUT / f"autolabel_vs_m_{data.source}.png", dpi=80)
    # 4: self-training rounds
    tau1 = out["acceptance"][1]["calibration"]["tau"]
    settings = {"tau for 99% (meta-val), re-anchored": dict(tau=tau1, anchored=True),
                "tau = 0.5, locked in": dict(tau=0.5, anchored=False),
                "tau = 0.5, re-anchored + mask": dict(tau=0.5, anchored=True, radius=cal1.radius)}
    st = {h: study.self_training_study(NEW, settings, 5, 1, 15, n_pools, 6, 3, cal1.temperature, n_distractors=h)
          for h in (0, 5)}
    out["self_training"] = {h: {name: {key: [_acc(a) for a in vals] for key, vals in r.items()}
                                for name, r in res.items()} for h, res in st.items()}
    study.plot_self_training(st, title=f"{data.source}: self-training, 5-way 1-shot").savefig(
        OUT / f"autolabel_self_training_{data.source}.png", dpi=80)
    # 5: human effort
    base = study.pretrained_baseline(data, device)
    effort = study.human_effort(data, NEW, VAL, base, n_way=20, per_class=20, n_runs=n_runs)
    out["effort"] = {"table": study.effort_table(effort), "headline": study.headline(effort),
                     "headline_95": study.headline(effort, 0.95),
                     "curves": {n: [sum(c) / len(c) for c in zip(*runs)] for n, runs in effort["curves"].items()}}
    study.plot_human_effort(effort, title=f"{data.source}: 20 new classes x 20 images").savefig(
        OUT / f"autolabel_effort_{data.source}.png", dpi=80)
    # audit
    out["audit"] = study.audit_demo(NEW, 20, 20, 0.05, cal1.temperature, seed=3)
    return out


def _f(a: dict | None, scale: float = 100) -> str:
    if a is None:
        return "-"
    ci = "" if a["ci95"] is None or (isinstance(a["ci95"], float) and math.isnan(a["ci95"])) else \
        f" ± {scale * a['ci95']:.1f}"
    return f"{scale * a['mean']:.1f}{ci}%"


def report() -> str:
    runs = {s: json.loads((OUT / f"autolabel_{s}.json").read_text()) for s in ("glyphs", "omniglot")
            if (OUT / f"autolabel_{s}.json").exists()}
    if not runs:
        raise SystemExit("No autolabel_<source>.json yet: run with --source first.")
    lines = ["# Automatic labelling (chapter 07; benchmarks/autolabel_measurements.py)", ""]
    for s, r in runs.items():
        m = r["meta"]
        lines.append(f"- **{s}**: `python benchmarks/autolabel_measurements.py --source {s}` on {m['device']}, "
                     f"torch {m['torch']}, {m['date']}; {m['pools']} pools per point, {m['runs']} runs of the "
                     f"human-effort simulation; meta-val {m['val_classes']} classes (whole background alphabets), "
                     f"new alphabets {m['new_classes']} classes. One trained embedding (quick budget).")
    lines += ["", "**1-2. Threshold for 99% precision chosen on meta-val, applied to the new alphabets** "
              "(5-way, 15 unlabelled per class; coverage = share of the pool accepted, mean ± 95% over pools; "
              "precision over all accepted labels; ECE over blocks of 10 pools; the last columns: the threshold "
              "chosen on the support sets instead).", "",
              "| source | K | κ (meta-val) | τ | coverage | precision | gap to 99% | ECE κ = 1 | ECE κ fitted | "
              "τ from support: precision | coverage |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, r in runs.items():
        for k, a in r["acceptance"].items():
            c = a["calibration"]
            lines.append(f"| {s} | {k} | {c['temperature']:.2f} | {c['tau']:.3f} | {_f(a['coverage'])} | "
                         f"{100 * a['precision_pooled']:.2f}% | {100 * a['gap']:+.2f} | {_f(a['ece_before'])} | "
                         f"{_f(a['ece_after'])} | {100 * a['support_tau_precision']:.2f}% | "
                         f"{_f(a['support_tau_coverage'])} |")
    lines += ["", "**3. Accuracy on the pool vs M unlabelled items per class** (5-way 1-shot; H = 5 distractor "
              "classes of M items each where marked).", ""]
    for s, r in runs.items():
        ms = list(next(iter(r["vs_m"]["0"].values())).keys())
        lines += [f"| {s} | H | " + " | ".join(f"M = {m}" for m in ms) + " |", "|---|---|" + "---|" * len(ms)]
        for h, res in r["vs_m"].items():
            for name, by_m in res.items():
                lines.append(f"| {name} | {h} | " + " | ".join(_f(by_m[m]) for m in ms) + " |")
        lines += ["", f"![accuracy vs M, {s}](autolabel_vs_m_{s}.png)", ""]
    lines += ["**4. Self-training rounds** (5-way 1-shot, 15 unlabelled per class, Z = 3 per class per round; "
              "precision of the accepted pseudo-labels and held-out accuracy after round 6; round 0 = human "
              "labels only).", "",
              "| source | H | setting | precision, round 1 | precision, round 6 | coverage, round 6 | "
              "held-out, round 0 | held-out, round 6 |", "|---|---|---|---|---|---|---|---|"]
    for s, r in runs.items():
        for h, res in r["self_training"].items():
            for name, v in res.items():
                lines.append(f"| {s} | {h} | {name} | {_f(v['precision'][0])} | {_f(v['precision'][-1])} | "
                             f"{_f(v['coverage'][-1])} | {_f(v['heldout'][0])} | {_f(v['heldout'][-1])} |")
    lines += ["", "**5. Human effort: labelling 20 new classes x 20 images** (clicks include the first label per "
              "class; mean ± 95% over runs).", ""]
    for s, r in runs.items():
        lines += [f"*{s}.* {r['effort']['headline']}", "", r["effort"]["table"], "",
                  f"![human effort, {s}](autolabel_effort_{s}.png)", ""]
        a = r["audit"]
        lines += [f"Audit ({s}): {a['flipped']} of 400 labels flipped at random; cleanlab (leave-one-out "
                  f"prototype probabilities) flagged {a['flagged']}, {a['hits']} of them flips.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["glyphs", "omniglot"])
    ap.add_argument("--pools", type=int, default=600)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args(argv)
    t0, c0 = time.perf_counter(), time.process_time()
    if a.source:
        res = measure(a.source, a.pools, a.runs)
        (OUT / f"autolabel_{a.source}.json").write_text(json.dumps(res, indent=1))
        print(res["effort"]["headline"])
    if a.report or not a.source:
        (OUT / "autolabel.md").write_text(report() + "\n")
        print(f"wrote {OUT / 'autolabel.md'}")
    print(f"wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
