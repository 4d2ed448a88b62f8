"""Reptile on Omniglot at (up to) the paper's scale: N-way K-shot, transductive, with intervals.

    OMNIGLOT_DIR=/path/to/zips .venv/bin/python benchmarks/reptile_omniglot.py --iters 100000

Nichol, Achiam & Schulman (2018), arXiv:1803.02999, Omniglot recipe (their Table 3 / README):
Conv-4 (64 channels; the paper's uses strided convolutions, the course's max-pooling), inner Adam
(lr 1e-3, beta1 = 0), 5 inner steps on minibatches of 10 drawn from a task's 10 examples per class
(one pass over 50 different images), outer step epsilon = 1 annealed linearly to 0, meta-batch 5, 100,000
meta-iterations, 50 inner steps at test time on the support set (minibatches of 5), queries
classified together (transductive BatchNorm). Published 5-way 1-shot: 95.39% (97.68% transductive);
5-way 5-shot 98.90% (99.48%); 20-way 1-shot 88.14% (89.43%); 20-way 5-shot 96.65% (97.12%).

Writes benchmarks/out/reptile_omniglot.md. Without OMNIGLOT_DIR it runs on the built-in glyph
set and says so. Also saves the trained weights beside the report (``.pt``). A GPU is recommended
(``COURSE_DEVICE`` picks one); a smoke run on a shared CPU:
``--iters 10 --episodes 10 --test-steps 5 --hidden 32``.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils import nets, reptile  # noqa: E402
from course_utils.baselines import pixel_nn_classify  # noqa: E402
from course_utils.datasets import few_shot_data  # noqa: E402
from course_utils.devices import describe_device, pick_device, seed_everything  # noqa: E402
from course_utils.episodes import EpisodeSampler  # noqa: E402
from course_utils.evaluation import evaluate  # noqa: E402
from course_utils.training import train_loop  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
PAPER = {(5, 1): "95.39 (97.68)", (5, 5): "98.90 (99.48)", (20, 1): "88.14 (89.43)", (20, 5): "96.65 (97.12)"}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=100000, help="meta-iterations (paper: 100000)")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--shots", type=int, default=1, help="K at test time")
    ap.add_argument("--train-shots", type=int, default=10, help="examples per class in a training task")
    ap.add_argument("--meta-batch", type=int, default=5)
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--inner-batch", type=int, default=10)
    ap.add_argument("--inner-lr", type=float, default=1e-3)
    ap.add_argument("--optimizer", choices=reptile.OPTIMIZERS, default="adam")
    ap.add_argument("--eps", type=float, default=1.0, help="outer step, annealed linearly to 0")
    ap.add_argument("--test-steps", type=int, default=50)
    ap.add_argument("--test-batch", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads (0: the course's COURSE_THREADS setting, default 1)")
    ap.add_argument("--out", type=Path, default=OUT / "reptile_omniglot.md")
    args = ap.parse_args(argv)

    device = pick_device()  # applies COURSE_THREADS; --threads overrides it
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    data = few_shot_data()
    print(data.note)
    model = nets.conv4_classifier(args.ways, hidden=args.hidden, batch_stats_only=True).to(device)
    learner = reptile.Reptile(model, args.inner_lr, args.inner_steps, args.eps, optimizer=args.optimizer,
                              inner_batch_size=args.inner_batch, test_steps=args.test_steps,
                              test_batch_size=args.test_batch, loss="cross_entropy", seed=args.seed)
    # a training task: train_shots labelled examples per class (sampled as support + 1 "query")
    episodes = EpisodeSampler(data.train, args.ways, args.train_shots - 1, 1, batch_size=args.meta_batch,
                              seed=args.seed)

    def step(i: int) -> dict[str, float]:
        ep = next(episodes).to(device)
        x = torch.cat([ep.support_x, ep.query_x], 1)
        y = torch.cat([ep.support_y, ep.query_y], 1)
        return learner.meta_step(x, y, reptile.linear_epsilon(i, args.iters, args.eps))

    hist = train_loop(step, args.iters, desc="Reptile meta-training")
    t0 = time.perf_counter()
    acc = evaluate(learner.classify, data.test, args.ways, args.shots, 15, args.episodes, device=device,
                   desc="Reptile eval")
    eval_s = time.perf_counter() - t0
    pixel = evaluate(pixel_nn_classify, data.test, args.ways, args.shots, 15, args.episodes, desc="pixel 1-NN")

    cmd = "python benchmarks/reptile_omniglot.py " + " ".join(argv if argv is not None else sys.argv[1:])
    paper = PAPER.get((args.ways, args.shots), "not published")
    lines = [f"# Reptile, {args.ways}-way {args.shots}-shot ({data.source})", "",
             f"Command: `{cmd.strip()}`  ",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"{describe_device(device)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}  ",
             f"Data: {data.note}", "",
             f"Recipe: Conv-4 ({args.hidden} ch, batch-statistics BatchNorm), inner {args.optimizer} "
             f"lr {args.inner_lr}, {args.inner_steps} steps of {args.inner_batch} examples "
             f"({args.train_shots} per class per task), eps {args.eps} -> 0, meta-batch {args.meta_batch}, "
             f"{args.iters} meta-iterations ({hist.seconds:.0f} s); test: {args.test_steps} steps on "
             f"minibatches of {args.test_batch}, 15 queries per class classified together (transductive), "
             f"{args.episodes} episodes ({eval_s:.0f} s).", "",
             "| method | accuracy (mean ± 95% interval) |", "|---|---|",
             f"| Reptile (this run) | {100 * acc.mean:.2f} ± {100 * acc.ci95:.2f}% |",
             f"| pixel 1-NN (same episodes) | {100 * pixel.mean:.2f} ± {100 * pixel.ci95:.2f}% |",
             f"| Reptile, Nichol et al. 2018 (transductive in brackets), Omniglot | {paper} |", ""]
    if args.optimizer == "adam":
        lines += ["Note: the inner Adam (beta1 = 0) carries its state from task to task, as the paper's code does "
                  "(`reptile.Reptile(carry_state=True)`, the tasks of a meta-batch start from one state and the "
                  "state kept is their mean); test tasks start from the state meta-training left. "
                  "`benchmarks/reptile_curves.py` compares this with a fresh Adam per task and with a port of the "
                  "paper's code.", ""]
    if args.iters < 100000 or data.source != "omniglot":
        lines.append(f"Note: {args.iters} meta-iterations on {data.source}; the paper ran 100,000 on "
                     "Omniglot, so this run is not a reproduction of its number.")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    torch.save({"args": vars(args), "state": {k: v.cpu() for k, v in model.state_dict().items()}},
                args.out.with_suffix(".pt"))
    print(text)
    return text


if __name__ == "__main__":
    main()
