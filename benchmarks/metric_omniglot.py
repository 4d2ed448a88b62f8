"""Prototypical and Matching networks on real Omniglot, at (up to) the papers' scale.

    .venv/bin/python benchmarks/metric_omniglot.py [--episodes 20000] [--test-episodes 600]

Trains Conv-4 with episodic training on the Vinyals split (meta-train characters with rotations;
Snell et al.: 60-way training episodes, Adam 1e-3 halved every 2,000 episodes) and evaluates on the
meta-test characters: 5-way 1/5-shot and 20-way 1/5-shot, mean ± 95% interval. Published (Vinyals
split): Matching Networks 98.1 / 98.9 / 93.8 / 98.5, Prototypical Networks 98.8 / 99.7 / 96.0 / 98.9.
Writes benchmarks/out/metric_omniglot.md. Without OMNIGLOT_DIR it says so and stops.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils import omniglot  # noqa: E402
from course_utils.datasets import few_shot_data  # noqa: E402
from course_utils.devices import describe_device, pick_device, seed_everything  # noqa: E402
from course_utils.episodic import embed_class_set, make_classifier, train_episodic  # noqa: E402
from course_utils.evaluation import evaluate  # noqa: E402
from course_utils.matching import MatchingNet, matching_loss  # noqa: E402
from course_utils.nets import conv4  # noqa: E402
from course_utils.protonet import ProtoNet, protonet_loss  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "metric_omniglot.md"
SETTINGS = [(5, 1), (5, 5), (20, 1), (20, 5)]
PUBLISHED = {"Prototypical": ["98.8", "99.7", "96.0", "98.9"], "Matching": ["98.1", "98.9", "93.8", "98.5"]}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=20000, help="training episodes per model and shot")
    ap.add_argument("--train-way", type=int, default=60)
    ap.add_argument("--test-episodes", type=int, default=600)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not omniglot.available():
        print("Omniglot is needed: " + omniglot.why_unavailable())
        return ""
    device = pick_device()
    data = few_shot_data("omniglot")
    lines = ["# Metric-based meta-learning on Omniglot (Vinyals split, rotations)", "",
             f"Command: `.venv/bin/python benchmarks/metric_omniglot.py --episodes {args.episodes} "
             f"--train-way {args.train_way} --test-episodes {args.test_episodes}`  ",
             f"Hardware: {describe_device(device)}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}", "",
             "| model | trained on | train time | " + " | ".join(f"{n}-way {k}-shot" for n, k in SETTINGS) + " |",
             "|---|---|---|" + "---|" * len(SETTINGS)]
    models = {"Prototypical": (lambda: ProtoNet(conv4()), protonet_loss, lambda: ProtoNet(nn.Identity())),
              "Matching": (lambda: MatchingNet(conv4(), scale=10.0), matching_loss,
                           lambda: MatchingNet(nn.Identity(), scale=10.0))}
    for name, (build, loss, on_features) in models.items():
        for shot in (1, 5):
            seed_everything(0)
            model = build().to(device)
            t0 = time.perf_counter()
            train_episodic(model, loss, data.train, args.train_way, shot, 5, args.episodes, 1e-3, device,
                           lr_halve_every=2000, desc=f"{name} {shot}-shot")
            seconds = time.perf_counter() - t0
            feats = embed_class_set(model.encoder, data.test, device)
            classify = make_classifier(on_features())
            accs = [evaluate(classify, feats, n, k, 15, args.test_episodes) if k == shot else None
                    for n, k in SETTINGS]
            cells = [f"{100 * a.mean:.1f} ± {100 * a.ci95:.1f}" if a else "" for a in accs]
            lines.append(f"| {name} | {args.train_way}-way {shot}-shot, {args.episodes} episodes | "
                         f"{seconds / 60:.1f} min | " + " | ".join(cells) + " |")
        lines.append(f"| {name} (published) | paper | | " + " | ".join(PUBLISHED[name]) + " |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
