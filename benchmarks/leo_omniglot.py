"""LEO, MAML (linear head) and Prototypical networks on the same pre-trained features, at full budget.

    OMNIGLOT_DIR=/path/to/omniglot .venv/bin/python benchmarks/leo_omniglot.py            # paper-scale run
    .venv/bin/python benchmarks/leo_omniglot.py --data glyphs --pretrain-steps 20 ...      # any size

The pipeline of chapter 06: pre-train a Conv-4 classifier on a subset of the meta-training classes,
embed the other meta-training classes and the meta-test classes, meta-train LEO (Rusu et al., ICLR 2019,
arXiv:1807.05960) and a MAML-adapted linear head (Finn et al., ICML 2017) on those features, and evaluate
them with prototypes (Snell et al., NeurIPS 2017) on the same meta-test episodes (mean ± 95% interval).
LEO and MAML see L2-normalised features, the prototypes the raw ones (as in chapters 02 and 06). LEO is
evaluated in evaluation mode under torch.no_grad, so its test-time steps are first order.
LEO's published numbers are on miniImageNet only (61.76% 5-way 1-shot with WRN-28-10 features); there is
no published Omniglot number to compare with, so the report puts LEO beside MAML and prototypes instead.
Writes benchmarks/out/leo_omniglot.md (or --out).
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
from course_utils import baselines, leo, maml, nets, protonet  # noqa: E402
from course_utils.datasets import few_shot_data  # noqa: E402
from course_utils.devices import describe_device, pick_device, seed_everything  # noqa: E402
from course_utils.episodes import EpisodeSampler  # noqa: E402
from course_utils.episodic import class_set_fingerprint, train_episodic  # noqa: E402
from course_utils.evaluation import evaluate  # noqa: E402
from course_utils.training import load_or_train, train_loop  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "leo_omniglot.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="auto", choices=["auto", "omniglot", "glyphs"])
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--n-way", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=600, help="meta-test episodes per result")
    ap.add_argument("--n-pre", type=int, default=0, help="pre-training classes (0: half the meta-train classes)")
    ap.add_argument("--n-meta", type=int, default=0, help="LEO/MAML meta-training classes (0: all the others)")
    ap.add_argument("--n-test", type=int, default=0, help="meta-test classes (0: all)")
    ap.add_argument("--pretrain-steps", type=int, default=20000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--leo-steps", type=int, default=20000)
    ap.add_argument("--leo-lr", type=float, default=3e-3)
    ap.add_argument("--n-z", type=int, default=16)
    ap.add_argument("--maml-steps", type=int, default=20000)
    ap.add_argument("--maml-alpha", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-minutes", type=float, default=None,
                    help="stop pre-training after this long (the report says how many steps it ran)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    for name in ("episodes", "pretrain_steps", "leo_steps", "maml_steps", "hidden", "n_z", "n_way"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device()
    seed_everything(args.seed)
    data = few_shot_data(args.data)
    t_start = time.perf_counter()
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(args.seed)).tolist()
    n_pre = args.n_pre or len(data.train) // 2
    n_meta = args.n_meta or len(data.train) - n_pre
    if n_pre + n_meta > len(data.train):
        raise SystemExit(f"--n-pre + --n-meta = {n_pre + n_meta} exceeds the {len(data.train)} meta-train classes.")
    n_test = min(args.n_test or len(data.test), len(data.test))
    pre = dict(data=data.source, classes=class_set_fingerprint(data.train), n_pre=n_pre, seed=args.seed, lr=1e-3,
               steps=args.pretrain_steps, batch_size=256, hidden=args.hidden, minutes=args.pretrain_minutes)

    def pretrain():
        net, hist = baselines.pretrain_embedding(data.train.subset(order[:n_pre]), pre["steps"], pre["batch_size"],
                                                 pre["lr"], pre["hidden"], device, args.seed,
                                                 max_seconds=60 * pre["minutes"] if pre["minutes"] else None)
        return {"state": {k: v.cpu() for k, v in net.state_dict().items()}, "seconds": hist.seconds,
                "steps": len(hist.values["loss"])}

    stored = load_or_train("bench-leo-pretrain", pre, pretrain)
    emb = nets.conv4(1, args.hidden).to(device)
    emb.load_state_dict(stored["state"])
    meta = baselines.embed_classes(emb, data.train.subset(order[n_pre:n_pre + n_meta]), device=device)
    test = baselines.embed_classes(emb, data.test.subset(range(n_test)), device=device)
    d = meta.item_shape[0]

    rows, n = {}, args.n_way
    for k in args.shots:
        torch.manual_seed(args.seed)
        model = leo.LEO(d, n_z=args.n_z, alpha=2.0, eta=0.3).to(device)
        t0 = time.perf_counter()
        train_episodic(model, leo.episode_loss, meta, n, k, 15, steps=args.leo_steps, lr=args.leo_lr,
                       device=device, seed=args.seed, desc=f"LEO {n}-way {k}-shot", clip_grad_norm=0.1)
        t_leo = time.perf_counter() - t0
        model.eval()

        torch.manual_seed(args.seed)
        head = nn.Sequential(leo.L2Normalize(), nn.Linear(d, n)).to(device)
        learner = maml.MAML(head, args.maml_alpha, 5, loss="cross_entropy")
        opt = torch.optim.Adam(head.parameters(), lr=1e-3)
        batches = EpisodeSampler(meta, n, k, 15, batch_size=4, seed=args.seed)

        def step(_):
            b = next(batches).to(device)
            return {"loss": learner.meta_step(opt, b.support_x, b.support_y, b.query_x, b.query_y)}
        t0 = time.perf_counter()
        train_loop(step, args.maml_steps, desc=f"MAML head {n}-way {k}-shot")
        t_maml = time.perf_counter() - t0

        ev = dict(classes=test, n_way=n, k_shot=k, n_episodes=args.episodes, device=device, seed=args.seed)
        rows[k] = {"Prototypical networks (no meta-training)": (evaluate(protonet.classify_embedded, **ev), 0.0),
                   f"MAML, linear head ({args.maml_steps} meta-steps)": (evaluate(learner.classify, **ev), t_maml),
                   f"LEO, n_z = {args.n_z} ({args.leo_steps} episodes)":
                       (evaluate(lambda ep: _no_grad(leo.leo_forward, model, ep).logits, **ev), t_leo)}

    lines = ["# LEO, MAML and prototypes on the same pre-trained features", "",
             f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/leo_omniglot.py', *(argv or sys.argv[1:])])}`  ",
             f"Data: {data.source} ({data.note.split('.')[0]}).  ",
             f"Machine: {describe_device(device)}, {platform.processor() or platform.machine()}, {os.cpu_count()} "
             f"cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; total {time.perf_counter() - t_start:.0f} s.",
             "", f"Embedding: Conv-4 (hidden {args.hidden}, D = {d}) pre-trained for "
             f"{stored.get('steps', args.pretrain_steps)} of {args.pretrain_steps} steps (batches of 256, "
             f"{stored['seconds']:.0f} s) on "
             f"{n_pre} meta-train classes; LEO and MAML meta-trained on {n_meta} other meta-train classes; "
             f"{n_test} meta-test classes; {args.episodes} test episodes, 15 queries per class. LEO's gradient norm "
             "is clipped at 0.1 (as in the official code).", "",
             "| method | " + " | ".join(f"{n}-way {k}-shot" for k in args.shots) + " | training time |",
             "|---|" + "---|" * len(args.shots) + "---|"]
    for name in rows[args.shots[0]]:
        accs = [rows[k][name][0] for k in args.shots]
        secs = sum(rows[k][name][1] for k in args.shots)
        lines.append(f"| {name} | " + " | ".join(f"{100 * a.mean:.2f} ± {100 * a.ci95:.2f}%" for a in accs)
                     + f" | {secs:.0f} s |")
    lines += ["", "Published LEO numbers are for miniImageNet only (Rusu et al., 2019: 61.76 ± 0.08% 5-way 1-shot,",
              "77.59 ± 0.12% 5-way 5-shot, WRN-28-10 features); none exist for Omniglot, so none is compared here."]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
