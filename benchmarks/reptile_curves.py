"""Reptile learning curves on Omniglot 5-way 1-shot: the course's Reptile against a port of the paper's code.

    OMNIGLOT_DIR=../shared/data/omniglot .venv/bin/python benchmarks/reptile_curves.py \
        [--iters 1500] [--every 500] [--episodes 200] [--only port ...]

Every variant trains the same Conv-4 size for the same number of meta-iterations on tasks drawn with
the same seed, and is evaluated at the same checkpoints on the same seeded test episodes (5-way 1-shot,
15 queries per class classified together, i.e. transductive BatchNorm; 50 inner steps on minibatches
of 5 at test time, the paper's).

Variants
- ``course, fresh Adam``: ``reptile.Reptile(..., carry_state=False)``, the course's inner Adam before
  this benchmark: zero moments and step count for every task.
- ``course``: ``reptile.Reptile`` as it is now: the inner Adam's state carries across tasks (the
  tasks of a meta-batch start from one state; the state kept is their mean).
  (Both ``course`` variants are tested with the script's symmetric-head wrapper, the same computation
  as ``Reptile(symmetric_head=True)``, so that the ports get the very same test.)
- ``port``: the recipe of openai/supervised-reptile (Nichol et al. 2018) written out here
  independently, with its own network and optimiser: 4 x [3x3 conv, stride 2, TensorFlow "same"
  padding -> BatchNorm (batch statistics, eps 1e-3) -> ReLU], Glorot-uniform weights and zero biases,
  a dense head; one ``torch.optim.Adam`` (beta1 = 0) for the whole run whose state carries from task
  to task *in sequence* (the weights are restored after each task, the optimiser state is not);
  each task: 5 classes x 10 images, 5 inner steps on minibatches of 10 walking through a shuffled
  pass; meta-batch 5, epsilon 1 -> 0 linearly; at test time 50 steps on the 5 support images, all
  state (weights and Adam) restored after every test task.
- ``port, max-pool Conv-4``: the port with the course's network (max-pooling, PyTorch's initialisation,
  BatchNorm eps 1e-5); what remains between it and ``course`` is how Adam's state is carried within a
  meta-batch (in sequence here, from one shared state in ``reptile.Reptile``).

At the end each variant is also evaluated with a *symmetric head*: every row of the head replaced by
the rows' mean before test-time adaptation, so that it favours no label (like MAML's zero head; not
the paper's method), and, for the port, with the paper's own protocol (1 query per class). Differences from the paper kept everywhere: the
course's Omniglot pipeline (Vinyals et al.'s split with rotated test classes, strokes = 1); fewer
meta-iterations (the paper: 100,000). Writes ``benchmarks/out/reptile_curves.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import curves  # noqa: E402
from course_utils import nets, omniglot, reptile  # noqa: E402
from course_utils.datasets import few_shot_data  # noqa: E402
from course_utils.devices import describe_device, pick_device, seed_everything  # noqa: E402
from course_utils.episodes import EpisodeSampler  # noqa: E402
from course_utils.evaluation import evaluate  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
ORDER = ["course, fresh Adam", "course", "port", "port, max-pool Conv-4"]
N_WAY = 5


# ----------------------------------------------------------------------------- the port

class SameConv(nn.Module):
    """TensorFlow's ``padding="same"`` for a stride-2 3x3 conv: pad (total) max((out-1)*2 + 3 - in, 0),
    the odd pixel at the bottom/right."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
            pads += [total // 2, total - total // 2]
        return self.conv(F.pad(x, pads))


def port_net(n_way: int, hidden: int) -> nn.Sequential:
    """The paper's Omniglot model (its ``OmniglotModel``): 28 -> 14 -> 7 -> 4 -> 2, then dense."""
    layers: list[nn.Module] = []
    c = 1
    for _ in range(4):
        layers += [SameConv(c, hidden), nn.BatchNorm2d(hidden, eps=1e-3, track_running_stats=False), nn.ReLU()]
        c = hidden
    net = nn.Sequential(*layers, nets.Flatten(), nn.Linear(hidden * 2 * 2, n_way))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


class PortReptile:
    """Reptile as the paper's ``reptile.py`` runs it, with ``torch.optim.Adam`` in place of TensorFlow's."""

    def __init__(self, net: nn.Module, lr: float, inner_steps: int, inner_batch: int, test_steps: int,
                 test_batch: int, seed: int):
        self.net, self.inner_steps, self.inner_batch = net, inner_steps, inner_batch
        self.test_steps, self.test_batch = test_steps, test_batch
        self.opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
        self.gen = torch.Generator().manual_seed(seed)
        self.test_gen = torch.Generator().manual_seed(seed + 1)

    def _weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.net.parameters()]

    def _load(self, ws: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, w in zip(self.net.parameters(), ws):
                p.copy_(w)

    def _train(self, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, gen: torch.Generator) -> None:
        """``steps`` Adam steps on minibatches walking through shuffled passes of (x, y) (``_mini_batches``)."""
        order: list[int] = []
        for _ in range(steps):
            idx = []
            while len(idx) < batch:
                if not order:
                    order = torch.randperm(len(x), generator=gen).tolist()
                idx.append(order.pop())
            self.opt.zero_grad()
            F.cross_entropy(self.net(x[idx]), y[idx]).backward()
            self.opt.step()

    def meta_step(self, xs: torch.Tensor, ys: torch.Tensor, eps: float) -> None:
        """One meta-iteration on tasks ``xs (B, n, ...)``, ``ys (B, n)``, one after the other."""
        old = self._weights()
        new = []
        for x, y in zip(xs, ys):
            self._train(x, y, self.inner_steps, self.inner_batch, self.gen)
            new.append(self._weights())
            self._load(old)                         # weights restored, Adam's state is not
        avg = [torch.stack(ws).mean(0) for ws in zip(*new)]
        self._load([o + eps * (a - o) for o, a in zip(old, avg)])

    def classify(self, ep) -> torch.Tensor:
        """Adapt on the support set, classify all queries together, restore weights and Adam's state."""
        weights, opt_state = self._weights(), copy.deepcopy(self.opt.state_dict())
        self._train(ep.support_x, ep.support_y, self.test_steps, self.test_batch, self.test_gen)
        with torch.no_grad():
            logits = self.net(ep.query_x)
        self._load(weights)
        self.opt.load_state_dict(opt_state)
        return logits


# ----------------------------------------------------------------------------- helpers

def symmetric_head(model: nn.Module):
    """Wraps ``classify`` so that it runs with every row of the head (weight and bias) replaced by the rows'
    mean, the head put back afterwards. A head whose rows are equal favours no label, like MAML's zero
    head (subtracting the mean row instead would change nothing: softmax ignores a shift shared by all
    logits). Not the paper's method."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]

    def wrap(classify):
        def run(ep):
            w, b = head.weight.detach().clone(), head.bias.detach().clone()
            with torch.no_grad():
                head.weight.copy_(w.mean(0, keepdim=True).expand_as(w))
                head.bias.fill_(b.mean().item())
            try:
                return classify(ep)
            finally:
                with torch.no_grad():
                    head.weight.copy_(w)
                    head.bias.copy_(b)
        return run
    return wrap


def head_norm(model: nn.Module) -> float:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight.norm().item()


def head_parts(weight: torch.Tensor) -> dict[str, float]:
    """The head's norm split in two orthogonal parts: the row shared by all labels (their mean, which
    softmax ignores) and the label-specific rest."""
    mean = weight.mean(0, keepdim=True)
    return {"head shared row norm": mean.expand_as(weight).norm().item(),
            "head label-specific norm": (weight - mean).norm().item()}


def weights_file(out: Path, name: str) -> Path:
    return out.with_name(f"reptile_curves_{name.replace(' ', '_').replace(',', '')}.pt")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--episodes", type=int, default=200, help="test episodes per checkpoint")
    ap.add_argument("--final-episodes", type=int, default=400, help="test episodes of the end-of-run rows")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="variants to run (default: all)")
    ap.add_argument("--out", type=Path, default=OUT / "reptile_curves.json")
    ap.add_argument("--report", nargs="*", type=Path, help="only merge these result files into --out's report "
                    "(head norms missing from a file are computed from the weights saved beside it)")
    args = ap.parse_args(argv)
    if args.report is not None:
        data = curves.merge_files(args.report, args.out)
        for name, run in data["runs"].items():
            saved = [weights_file(f, name) for f in args.report if weights_file(f, name).exists()]
            if "head label-specific norm" not in run["extra"] and saved:
                sd = torch.load(saved[0])
                w = [v for k, v in sd.items() if k.endswith("weight") and v.dim() == 2][-1]
                run["extra"].update(head_parts(w))
        args.out.write_text(json.dumps(data, indent=1))
        return write_report(data, args.out)
    device = pick_device()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not omniglot.available():
        print(f"Omniglot not found ({omniglot.why_unavailable()}); running on the built-in glyph set.")
    data = few_shot_data()
    q, steps, batch, test_steps, test_batch, mb, lr = 15, 5, 10, 50, 5, 5, 1e-3
    cmd = "python benchmarks/reptile_curves.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    meta = {"protocol": {"source": data.source, "iters": args.iters, "every": args.every,
                         "episodes": args.episodes, "hidden": args.hidden, "seed": args.seed},
            "command": cmd, "machine": curves.machine(), "device": describe_device(device)}
    results = {}
    for name in [n for n in ORDER if not args.only or n in args.only]:
        seed_everything(args.seed)
        tasks = EpisodeSampler(data.train, N_WAY, 9, 1, batch_size=mb, seed=args.seed)   # 10 images per class

        def batch_xy():
            ep = next(tasks).to(device)
            return torch.cat([ep.support_x, ep.query_x], 1), torch.cat([ep.support_y, ep.query_y], 1)

        if name.startswith("course"):
            model = nets.conv4_classifier(N_WAY, hidden=args.hidden, batch_stats_only=True).to(device)
            learner = reptile.Reptile(model, lr, steps, 1.0, optimizer="adam", inner_batch_size=batch,
                                      test_steps=test_steps, test_batch_size=test_batch, loss="cross_entropy",
                                      seed=args.seed, carry_state=name == "course")

            def step(i, learner=learner):
                x, y = batch_xy()
                learner.meta_step(x, y, reptile.linear_epsilon(i, args.iters, 1.0))
        else:
            model = (port_net(N_WAY, args.hidden) if name == "port" else
                     nets.conv4_classifier(N_WAY, hidden=args.hidden, batch_stats_only=True)).to(device)
            learner = PortReptile(model, lr, steps, batch, test_steps, test_batch, args.seed)

            def step(i, learner=learner):
                x, y = batch_xy()
                learner.meta_step(x, y, reptile.linear_epsilon(i, args.iters, 1.0))

        def at_end(model=model, learner=learner):
            head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
            extra = {"head norm": head_norm(model), **head_parts(head.weight.detach())}
            torch.save(model.state_dict(), weights_file(args.out, name))
            a = evaluate(symmetric_head(model)(learner.classify), data.test, N_WAY, 1, q, args.final_episodes,
                         seed=args.seed, device=device, desc=f"{name}, symmetric head")
            extra["symmetric head"] = {"mean": a.mean, "ci95": a.ci95, "n": a.n}
            a = evaluate(learner.classify, data.test, N_WAY, 1, q, args.final_episodes, seed=args.seed,
                         device=device, desc=f"{name}, final")
            extra["final"] = {"mean": a.mean, "ci95": a.ci95, "n": a.n}
            if name.startswith("port"):
                a = evaluate(learner.classify, data.test, N_WAY, 1, 1, 2 * args.final_episodes,
                             seed=args.seed, device=device, desc=f"{name}, 1 query per class")
                extra["paper protocol (1 query per class)"] = {"mean": a.mean, "ci95": a.ci95, "n": a.n}
            print(name, extra, flush=True)
            return extra

        results[name] = curves.run_curve(step, learner.classify, data.test, args.iters, args.every,
                                         args.episodes, q, args.seed, device, name, at_end=at_end)
        curves.merge_save(args.out, meta, {name: results[name]})
    data_all = curves.merge_save(args.out, meta, {})
    return write_report(data_all, args.out)


def write_report(data: dict, out: Path) -> str:
    p = data["meta"]["protocol"]
    title = (f"Reptile, {p['source']} 5-way 1-shot, Conv-4 {p['hidden']} ch "
             f"({p['episodes']} test episodes per point, one training run each)")
    curves.plot(data, out.with_suffix(".png"), title, ORDER)
    lines = ["# Reptile learning curves: the course against a port of the paper's code", "",
             f"Commands: {'; '.join(f'`{c.strip()}`' for c in data['commands'])}  ",
             f"Machine: {data['meta']['machine']}, {data['meta']['device']}", "",
             "Test accuracy (%) after each number of meta-iterations, on the same seeded 5-way 1-shot episodes "
             f"({p['episodes']} per checkpoint, 15 queries per class, transductive, 50 test steps). "
             "One training run per variant: the intervals are over test episodes, not over training seeds. The training "
             "seconds are wall-clock time on the machine as it was (other runs may have shared it).", ""]
    lines += curves.table(data, ORDER)
    lines += ["", f"At the end ({p['iters']} meta-iterations; more test episodes):", "",
              "| variant | as trained | head rows set to their mean at test (not the paper's) | paper's protocol (1 query per class) "
              "| head weight norm (shared row / label-specific) |", "|---|---|---|---|---|"]
    fmt = lambda r: f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f} (n = {r['n']})" if r else "-"  # noqa: E731
    for n in [n for n in ORDER if n in data["runs"]]:
        e = data["runs"][n]["extra"]
        lines.append(f"| {n} | {fmt(e.get('final'))} | {fmt(e.get('symmetric head'))} | "
                     f"{fmt(e.get('paper protocol (1 query per class)'))} | {e.get('head norm', float('nan')):.2f} "
                     f"({e.get('head shared row norm', float('nan')):.2f} / {e.get('head label-specific norm', float('nan')):.2f}) |")
    lines += ["", "![Reptile learning curves](reptile_curves.png)", ""]
    return curves.save_report(lines, out)


if __name__ == "__main__":
    main()
