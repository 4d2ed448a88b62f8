"""First- against second-order MAML on Omniglot 5-way 1-shot, at equal meta-iterations.

    OMNIGLOT_DIR=../shared/data/omniglot .venv/bin/python benchmarks/first_order_curves.py \
        [--iters 1000] [--every 200] [--episodes 300] [--only "FO, alpha 0.4" ...]

Every variant trains the same Conv-4 (``--hidden`` channels, batch-statistics BatchNorm) from the same
initial weights on the same stream of meta-batches (seeded), with Adam (lr 1e-3) on the meta-gradient,
and is tested at the same checkpoints on the same seeded 5-way 1-shot test episodes (15 queries per
class). Variants differ in one thing at a time:

- order: second (``SO``) or first (``FO``) order;
- ``alpha``: the inner step on the *mean* support cross-entropy. Finn et al.'s code differentiates the
  cross-entropy summed over the N*K support examples and divided by K, i.e. N times the mean, so their
  alpha = 0.4 is alpha = 2.0 here;
- ``zero head``: the head's weights and bias are zero at the start and are set back to zero after every
  outer step (Kao et al. 2022's "zeroing trick", ``maml.MAML(zero_head=True)``; the results in
  ``benchmarks/out`` were made with this script's own copy of the same two lines), so every task's inner loop starts from a head that
  favours no label; labels are assigned to classes at random in every task, so a label-specific head is
  noise to the next task;
- inner steps: 1 in meta-training (Finn et al.'s Omniglot setting) or 5.

Test time: 3 inner steps (5 for the 5-step variant) with the training alpha (the course's quick
budget; Finn et al. take 10).

Writes ``benchmarks/out/first_order_curves.{json,md,png}`` (``--out`` changes the JSON path; the other
two sit beside it).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import curves  # noqa: E402
from course_utils import maml, nets, omniglot  # noqa: E402
from course_utils.datasets import few_shot_data  # noqa: E402
from course_utils.devices import describe_device, pick_device, seed_everything  # noqa: E402
from course_utils.episodes import EpisodeSampler  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
N_WAY = 5
# name -> (first_order, alpha, zero_head, inner steps in training and at test time)
VARIANTS = {
    "SO, alpha 0.4": (False, 0.4, False, 1),
    "FO, alpha 0.4": (True, 0.4, False, 1),
    "FO, alpha 0.2, zero head": (True, 0.2, True, 1),
    "FO, alpha 0.4, zero head": (True, 0.4, True, 1),
    "FO, alpha 1.0, zero head": (True, 1.0, True, 1),
    "FO, alpha 2.0, zero head": (True, 2.0, True, 1),
    "FO, alpha 0.4, 5 steps": (True, 0.4, False, 5),
    "FO, alpha 0.4, zero head, 5 steps": (True, 0.4, True, 5),
    "FO, alpha 0.1, zero head, 5 steps": (True, 0.1, True, 5),
    "SO, alpha 0.4, zero head": (False, 0.4, True, 1),
    "SO, alpha 0.1": (False, 0.1, False, 1),
    "SO, alpha 0.1, zero head, 5 steps": (False, 0.1, True, 5),
}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--meta-batch", type=int, default=4)
    ap.add_argument("--queries", type=int, default=5, help="query images per class in meta-training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="variants to run (default: all)")
    ap.add_argument("--out", type=Path, default=OUT / "first_order_curves.json")
    ap.add_argument("--report", nargs="*", type=Path, help="only merge these result files into --out's report")
    args = ap.parse_args(argv)
    if args.report is not None:
        return write_report(curves.merge_files(args.report, args.out), args.out)
    device = pick_device()
    if not omniglot.available():
        print(f"Omniglot not found ({omniglot.why_unavailable()}); running on the built-in glyph set.")
    data = few_shot_data()
    cmd = "python benchmarks/first_order_curves.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    meta = {"protocol": {"source": data.source, "iters": args.iters, "every": args.every, "episodes": args.episodes,
                         "hidden": args.hidden, "meta_batch": args.meta_batch, "queries": args.queries,
                         "seed": args.seed},
            "command": cmd, "machine": curves.machine(), "device": describe_device(device)}
    for name, (first_order, alpha, zero, steps) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        seed_everything(args.seed)
        model = nets.conv4_classifier(N_WAY, hidden=args.hidden, batch_stats_only=True).to(device)
        learner = maml.MAML(model, alpha, steps, max(steps, 3), first_order, loss="cross_entropy", zero_head=zero)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = EpisodeSampler(data.train, N_WAY, 1, args.queries, batch_size=args.meta_batch, seed=args.seed)

        def step(i, learner=learner, opt=opt, batches=batches):
            b = next(batches).to(device)
            learner.meta_step(opt, b.support_x, b.support_y, b.query_x, b.query_y)
        res = curves.run_curve(step, learner.classify, data.test, args.iters, args.every, args.episodes, 15,
                               args.seed, device, name)
        curves.merge_save(args.out, meta, {name: res})
    return write_report(curves.merge_save(args.out, meta, {}), args.out)


def write_report(data: dict, out: Path) -> str:
    p = data["meta"]["protocol"]
    title = (f"MAML, first vs second order, {p['source']} 5-way 1-shot, Conv-4 {p['hidden']} ch, "
             f"meta-batch {p['meta_batch']}\n({p['episodes']} test episodes per point, one training run each)")
    order = list(VARIANTS)
    curves.plot(data, out.with_suffix(".png"), title, order)
    lines = ["# First- vs second-order MAML at equal meta-iterations", "",
             f"Commands: {'; '.join(f'`{c.strip()}`' for c in data['commands'])}  ",
             f"Machine: {data['meta']['machine']}, {data['meta']['device']}", "",
             f"Test accuracy (%) on the same seeded 5-way 1-shot episodes ({p['episodes']} per checkpoint, 15 "
             f"queries per class); meta-training: meta-batch {p['meta_batch']}, {p['queries']} "
             "queries per class, Adam 1e-3 (1 inner step unless the name says otherwise; 3 at test time, 5 for the 5-step variant). alpha is a step on the mean support loss (Finn et al.'s 0.4 is 2.0 "
             "here). One training run per variant: the intervals are over test episodes. The training seconds are "
             "wall-clock time on the machine as it was (other runs may have shared it): compare accuracies at equal "
             "meta-iterations, not times.", ""]
    lines += curves.table(data, order)
    lines += ["", "![first vs second order](" + out.with_suffix(".png").name + ")", ""]
    return curves.save_report(lines, out)


if __name__ == "__main__":
    main()
