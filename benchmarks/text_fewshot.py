"""Few-shot language identification (chapter 09): 5-way 1- and 5-shot on held-out languages.

Measured on two splits, each method on the same episodes (mean +- 95% interval):
- "all scripts": 14 languages held out at random (seed 0), 28 for meta-training;
- "hard": 9 held-out languages that each share script and family with a training language.
Methods: raw hashed n-gram prototypes (no learning), ProtoNet with one learnt weight per bucket,
ProtoNet with a linear 64-d embedding bag, with an MLP (4096-256-64), MAML on a linear head.
Meta-overfitting: held-out 5-shot accuracy against the number of meta-training languages (several
random subsets) and against the encoder's size, with the meta-training accuracy and the gap.

    .venv/bin/python benchmarks/text_fewshot.py            # about 5 minutes on one CPU thread
    .venv/bin/python benchmarks/text_fewshot.py --toy      # seconds (tests)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("COURSE_QUIET", "1")

from course_utils import text, text_data as T  # noqa: E402
from course_utils.devices import pick_device  # noqa: E402
from course_utils.evaluation import Accuracy, evaluate, mean_ci95  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fmt(a: Accuracy) -> str:
    return f"{100 * a.mean:.1f} ± {100 * a.ci95:.1f}"


def as_dict(a: Accuracy) -> dict:
    return {"mean": a.mean, "ci95": a.ci95, "n": a.n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", "--quick", action="store_true", help="tiny sizes, for a test")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    args = ap.parse_args()
    pick_device("cpu")          # one thread (COURSE_THREADS, default 1) and the course's malloc tuning
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), cpu()
    toy = args.toy
    S = dict(buckets=512 if toy else 4096, train_sentences=20 if toy else 100, test_sentences=20 if toy else 40,
             steps=20 if toy else 300, episodes=20 if toy else 600, curve_episodes=20 if toy else 600,
             maml_steps=3 if toy else 150, seeds=[0] if toy else [0, 1, 2],
             n_langs=[5, 10] if toy else [5, 10, 20, 28])
    f = T.NGramFeaturizer(1, 3, S["buckets"], "l2")
    out: dict = {"settings": S, "featurizer": repr(f), "baseline": {}, "table": {}, "languages_curve": {},
                 "size_curve": {}}
    rows = []
    for split in ("all scripts", "hard"):
        trc, tec = T.random_language_split(14, 0) if split == "all scripts" else T.hard_language_split()
        tr, te = T.split_class_sets(trc, tec, n_sentences=S["test_sentences"], featurizer=f)
        tr = T.language_class_set(trc, S["train_sentences"], featurizer=f,
                                  title=f"{len(trc)} meta-training languages").featurised()
        te = te.featurised()
        f_sqrt = T.NGramFeaturizer(1, 3, S["buckets"], "l2", sqrt=True)
        te_sqrt = T.language_class_set(tec, S["test_sentences"], featurizer=f_sqrt,
                                       title=f"{len(tec)} held-out languages").featurised()
        tag = "rand" if split == "all scripts" else "hard"
        models = {"raw n-grams (no learning)": None}
        for kind, size, lr in (("weights", 1, 1e-2), ("linear", 64, 1e-2), ("mlp", 256, 1e-3)):
            m, _ = text.train_protonet(f"bench-text-{tag}-{kind}", text.make_encoder(kind, S["buckets"], size), tr,
                                       10, 5, 10, S["steps"], lr)
            models[f"ProtoNet, {kind} ({text.n_parameters(m):,} params)"] = m.encoder
        maml = text.train_maml_head(f"bench-text-{tag}-maml", tr, 5, 5, 10, steps=S["maml_steps"], batch=4, alpha=5.0)
        res = {}
        for k in (1, 5):
            for name, enc in models.items():
                res[(name, k)] = mean_ci95(text.protonet_accuracies(enc, te, 5, k, 15, S["episodes"], seed=1))
            res[("MAML, linear head (3 steps)", k)] = evaluate(maml.classify, te, 5, k, 15, S["episodes"], seed=1)
            res[("raw n-grams, square-rooted counts (no learning)", k)] = mean_ci95(
                text.protonet_accuracies(None, te_sqrt, 5, k, 15, S["episodes"], seed=1))
        out["table"][split] = {f"{n} | {k}-shot": as_dict(a) for (n, k), a in res.items()}
        out["baseline"][split] = {k: as_dict(res[("raw n-grams (no learning)", k)]) for k in (1, 5)}
        for name in dict.fromkeys(n for n, _ in res):
            rows.append(f"| {split} ({len(tec)} held out) | {name} | {fmt(res[(name, 1)])} | {fmt(res[(name, 5)])} |")
        print(f"{split}: done at {time.perf_counter() - t0:.0f} s", flush=True)
        if split != "all scripts":
            continue
        # meta-overfitting: held-out 5-shot accuracy vs number of training languages (random subsets)
        for kind in ("weights", "linear"):
            curve = {}
            for n in S["n_langs"]:
                vals = []
                for seed in (S["seeds"] if n < len(tr) else [0]):
                    idx = torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed))[:n].tolist()
                    sub = tr.subset(sorted(idx), title=f"{n} of the {tr.title}, subset {seed}")
                    m, _ = text.train_protonet(f"bench-text-nl-{kind}-{n}-{seed}",
                                               text.make_encoder(kind, S["buckets"], 64), sub, min(10, n), 5, 10,
                                               S["steps"], 1e-2 if kind == "weights" else 1e-2)
                    vals.append(mean_ci95(text.protonet_accuracies(m.encoder, te, 5, 5, 15, S["curve_episodes"], 2)))
                curve[n] = {"per_subset": [as_dict(a) for a in vals],
                            "mean_over_subsets": sum(a.mean for a in vals) / len(vals)}
            out["languages_curve"][kind] = curve
        # encoder size: held-out and meta-training accuracy, and the gap
        sizes = [("weights", 1, 1e-2, 0.0), ("linear", 16, 1e-2, 0.0), ("linear", 64, 1e-2, 0.0),
                 ("linear", 256, 1e-2, 0.0), ("mlp", 256, 1e-3, 0.0), ("linear", 64, 1e-2, 0.5)]
        raw_held = text.protonet_accuracies(None, te, 5, 5, 15, S["curve_episodes"], 2)
        for kind, size, lr, drop in sizes:
            m, _ = text.train_protonet(f"bench-text-size-{kind}-{size}-{drop}", text.make_encoder(kind, S["buckets"], size),
                                       tr, 10, 5, 10, S["steps"], lr, dropout=drop)
            held = text.protonet_accuracies(m.encoder, te, 5, 5, 15, S["curve_episodes"], 2)
            train_acc = text.protonet_accuracies(m.encoder, tr, 5, 5, 15, S["curve_episodes"], 3)
            gap, half = text.generalisation_gap(train_acc, held)
            name = f"{kind} {size}" + (f" + n-gram dropout {drop}" if drop else "")
            out["size_curve"][name] = {"params": text.n_parameters(m.encoder), "held_out": as_dict(mean_ci95(held)),
                                       "train": as_dict(mean_ci95(train_acc)), "gap": gap, "gap_ci95": half,
                                       "vs_raw": as_dict(mean_ci95(held - raw_held))}
        print(f"curves: done at {time.perf_counter() - t0:.0f} s", flush=True)
    wall, cpu_s = time.perf_counter() - t0, cpu() - c0
    out["wall_s"], out["cpu_s"] = wall, cpu_s
    md = [f"# Few-shot language identification (chapter 09){' — TOY SIZES' if toy else ''}", "",
          f"`{' '.join(['.venv/bin/python benchmarks/text_fewshot.py'] + (['--toy'] if toy else []))}` · "
          f"wall {wall:.0f} s, CPU {cpu_s:.0f} s, one torch thread · features {f!r} · "
          f"{S['train_sentences']} sentences of 6 words per training language, {S['test_sentences']} per held-out "
          f"language · {S['episodes']} episodes of 5-way, 15 queries per class (the same episodes for every method).",
          "", "## Held-out languages, accuracy % (mean ± 95% interval)", "",
          "| split | method | 1-shot | 5-shot |", "|---|---|---|---|", *rows, "",
          "## Meta-overfitting: held-out 5-shot accuracy vs the number of meta-training languages", "",
          "(all-scripts split; each point a random subset of the 28 training languages, "
          f"{len(S['seeds'])} subsets except at 28; mean over subsets (lowest–highest subset; largest 95% interval "
          f"over episodes of one subset))", "", "| encoder | " +
          " | ".join(str(n) for n in S["n_langs"]) + " |", "|---|" + "---|" * len(S["n_langs"])]
    for kind, curve in out["languages_curve"].items():
        md.append(f"| {kind} | " + " | ".join(
            f"{100 * c['mean_over_subsets']:.1f} ({100 * min(a['mean'] for a in c['per_subset']):.1f}–"
            f"{100 * max(a['mean'] for a in c['per_subset']):.1f}; ± {100 * max(a['ci95'] for a in c['per_subset']):.1f})"
            for c in curve.values()) + " |")
    md += ["", "## Encoder size (all-scripts split, 28 training languages, 5-shot)", "",
           "| encoder | parameters | held-out % | meta-training % | gap (pp) | held-out − raw (pp, paired) |",
           "|---|---|---|---|---|---|"]
    for name, r in out["size_curve"].items():
        md.append(f"| {name} | {r['params']:,} | {100 * r['held_out']['mean']:.1f} ± {100 * r['held_out']['ci95']:.1f} | "
                  f"{100 * r['train']['mean']:.1f} | {100 * r['gap']:.1f} ± {100 * r['gap_ci95']:.1f} | "
                  f"{100 * r['vs_raw']['mean']:+.1f} ± {100 * r['vs_raw']['ci95']:.1f} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "text_fewshot.md").write_text("\n".join(md) + "\n")
    (Path(args.out) / "text_fewshot.json").write_text(json.dumps(out, indent=1, default=str))
    print("\n".join(md))
    print(f"wall {wall:.1f} s, CPU {cpu_s:.1f} s")


if __name__ == "__main__":
    main()
