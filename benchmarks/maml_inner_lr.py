"""MAML's inner learning rate: the course's alpha = 0.4 on the *mean* loss vs the paper's step.

Finn et al.'s code (github.com/cbfinn/maml, ``utils.xent``) differentiates the per-example
cross-entropy summed over the N*K support examples and divided by K: N times the mean loss. Their
alpha = 0.4 (5-way Omniglot) is therefore a step of 0.4 * N = 2.0 on the mean loss that the course
(and PyTorch's ``F.cross_entropy``) uses. This script trains MAML at chapter 03's quick budget with
both step sizes, for several seeds, and reports 5-way 1-shot accuracy on the *validation* classes
(the test classes stay for the chapter), mean ± 95% interval over episodes per seed, and the mean
over seeds with a t-interval over seeds.

    python benchmarks/maml_inner_lr.py                      # quick budget, seeds 0-2
    python benchmarks/maml_inner_lr.py --meta-steps 20 --episodes 50 --seeds 0   # smoke run

Writes ``benchmarks/out/maml_inner_lr.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.4, 2.0],
                    help="inner step sizes on the mean loss (0.4: the course; 2.0 = 0.4 * 5: the paper's step)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--meta-steps", type=int, default=300, help="chapter 03's quick budget")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--meta-batch", type=int, default=4)
    ap.add_argument("--q-train", type=int, default=5)
    ap.add_argument("--test-steps", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(OUT / "maml_inner_lr"))
    return ap.parse_args(argv)


def run_one(data, alpha: float, seed: int, args, device) -> dict:
    import torch
    from course_utils import maml, nets
    from course_utils.episodes import EpisodeSampler
    from course_utils.evaluation import evaluate
    torch.manual_seed(seed)
    model = nets.conv4_classifier(5, hidden=args.hidden, batch_stats_only=True).to(device)
    learner = maml.MAML(model, alpha, 1, args.test_steps, loss="cross_entropy")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    episodes = EpisodeSampler(data.train, 5, 1, args.q_train, batch_size=args.meta_batch, seed=seed)
    t0 = time.perf_counter()
    for _ in range(args.meta_steps):
        ep = next(episodes).to(device)
        learner.meta_step(opt, ep.support_x, ep.support_y, ep.query_x, ep.query_y)
    seconds = time.perf_counter() - t0
    acc = evaluate(learner.classify, data.val, 5, 1, n_episodes=args.episodes, seed=1, device=device,
                   desc=f"alpha {alpha:g} seed {seed}")
    return {"alpha": alpha, "seed": seed, "mean": acc.mean, "ci95": acc.ci95, "seconds": seconds}


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95% t-interval half-width over a few seeds (Student's t, n - 1 degrees of freedom)."""
    import math
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return m, float("nan")
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, T975.get(n - 1, 1.96) * sd / math.sqrt(n)


def main(argv=None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(ROOT))
    from course_utils.datasets import few_shot_data
    from course_utils.devices import pick_device
    device = pick_device(args.device) if args.device else pick_device()
    data = few_shot_data()
    print(data.note, flush=True)
    rows = [run_one(data, a, s, args, device) for a in args.alphas for s in args.seeds]
    lines = [f"# MAML's inner step size on the mean loss (5-way 1-shot, {data.source})", "",
             f"Chapter 03's quick budget: Conv-4 with {args.hidden} filters, meta-batch {args.meta_batch}, "
             f"{args.q_train} queries per class, {args.meta_steps} meta-steps (Adam 1e-3), 1 inner step in "
             f"training and {args.test_steps} at test. Accuracy on {args.episodes} episodes of the "
             f"validation classes (mean ± 95% interval over episodes); device {device.type}.", "",
             "| alpha (mean loss) | seed | accuracy | training s |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['alpha']:g} | {r['seed']} | {100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}% "
                     f"| {r['seconds']:.0f} |")
    lines += ["", "| alpha (mean loss) | mean over seeds ± 95% t-interval over seeds |", "|---|---|"]
    for a in args.alphas:
        m, h = t_interval([r["mean"] for r in rows if r["alpha"] == a])
        lines.append(f"| {a:g} | {100 * m:.1f} ± {100 * h:.1f}% ({len(args.seeds)} seeds) |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
