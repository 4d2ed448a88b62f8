"""Prototypes of faster MAML meta-steps for the Conv-4 net on the CPU (issue: course >= 1.5x higher).

Each *variant* is a hand-written functional Conv-4 (the same function as
``nets.conv4_classifier(5, hidden=64, batch_stats_only=True)``) run in the course's per-task loop
(``maml.meta_gradient(strategy="loop")``: plain autograd, one task's graph at a time), with one
idea switched on at a time:

- ``course``: ``course_utils.maml.meta_gradient(strategy="loop")`` itself (the reference);
- ``func``: the hand-written forward with the module's exact ops (checks the harness: ~course);
- ``cl``: channels-last activations (``torch.channels_last``): max-pool and BatchNorm vectorise
  over channels; the first conv (one input channel) returns NCHW, so its output is converted;
- ``clin``: channels-last through the *input*: a (n, 1, H, W) batch given channels-last strides
  (``torch.empty_like(x, memory_format=torch.channels_last).copy_(x)``; ``x.contiguous(...)``
  returns x itself for one channel, whose strides read as NCHW), so the first conv already
  returns channels-last and the model needs no change (what a course patch can do);
- ``clq`` / ``clinq``: the same for the query sets only (the support graph, which second order
  differentiates twice, stays NCHW);
- ``im2col``: the first conv (one input channel, so a 9-wide im2col) as ``unfold`` + matmul,
  which yields its output channels-last directly (and its input needs no gradient);
- ``nobias``: conv biases dropped (a constant before batch-statistics BatchNorm is cancelled by
  the mean: the same function, and their meta-gradient is exactly zero);
- ``poolrelu``: ReLU after the max-pool (``max`` commutes with the monotone ReLU: the same
  function and the same gradients), on a 4x smaller tensor;
- ``bnpool``: BatchNorm -> ReLU -> max-pool as statistics on the full map, then max-pool, then the
  affine map and ReLU on the 4x smaller map: max-pool commutes with a per-channel increasing map,
  and BN's map x -> gamma (x - mu) / sigma + beta is increasing where gamma >= 0; channels with
  gamma < 0 are pooled as min (max of the sign-flipped map). The same function and gradients
  (except exact ties);
- ``batch1``: the first inner step's support gradients for all tasks at once (the weights are
  shared there) with ``vmap(grad(support loss), in_dims=(None, 0, 0))``: every conv forward is one
  conv over all B support sets, BatchNorm statistics stay per task (vmap's rule). Each task then
  runs its remaining steps and query from theta'^(1)_i as a new leaf, giving u_i = dL_Q/dtheta'^(1)_i
  (its graph freed per task, as in the loop); second order adds -alpha * sum_i H_i u_i with one
  batched backward through the kept support graph at the end;
- ``compile``: ``torch.compile`` of the forward;
- combinations joined with ``+``.

Findings (benchmarks/out/maml_speed_ideas*.md): channels-last is the big one (``clin``: 1.4-1.6x,
except second order with 5 steps, 1.1x, where ``clinq``, query sets only, gives 1.24x);
``nobias`` and ``poolrelu`` add 1.1-1.2x on top of it (model changes, not MAML ones). Dead ends:
``compile`` fails for second order ("torch.compile with aot_autograd does not currently support
double backward") and is slower for first order (0.25 vs 0.18 s at B = 4); ``batch1`` is not
faster at B = 4 and its second-order meta-gradient is wrong (ordinary autograd through
``vmap(grad)`` with affine BatchNorm, 3e-2 off); ``bnpool`` is slower (its ``var_mean`` graph
costs more than the fused BatchNorm kernels). Channels-last support sets change float32 rounding:
against a float64 reference they are *closer* than the course's NCHW (5 steps, second order,
B = 32: max error 9e-3 vs the course's 5.9e-2; the 5-step second-order meta-gradient is that
ill-conditioned in float32), so "max abs diff vs course" there measures the course's error.

Usage (each measurement in its own process, so peak RSS is its own)::

    python benchmarks/maml_speed_ideas.py --variants course clin clinq clin+nobias+poolrelu --tag r2
    python benchmarks/maml_speed_ideas.py --one clin 1 second --repeats 2 --meta-batch 4

Writes ``benchmarks/out/maml_speed_ideas[_TAG].json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def _setup(meta_batch: int):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from maml_speed import _setup as setup
    import torch
    return setup("conv", meta_batch, torch.device("cpu"))


# ----------------------------------------------------------------------------- the forward

def make_forward(opts: set[str]):
    import torch
    import torch.nn.functional as F
    cl = bool(opts & {"cl", "clq", "clin", "clinq"})
    nobias = "nobias" in opts
    poolrelu = "poolrelu" in opts
    im2col = "im2col" in opts
    bnpool = "bnpool" in opts
    clin = "clin" in opts or "clinq" in opts

    def fwd(p, x, cl=cl):
        """Conv-4 + linear on one batch of images (BatchNorm: batch statistics)."""
        for i in range(4):
            w, b = p[f"{i}.0.weight"], None if nobias else p[f"{i}.0.bias"]
            if i == 0 and im2col and cl:  # (n, h*w, 9 C_in) @ (9 C_in, C_out): NHWC, i.e. channels-last
                n, _, h, wd = x.shape
                cols = F.unfold(x, 3, padding=1).transpose(1, 2)
                y = cols @ w.reshape(w.shape[0], -1).t()
                x = (y if b is None else y + b).view(n, h, wd, w.shape[0]).permute(0, 3, 1, 2)
            else:
                x = F.conv2d(x, w, b, padding=1)
            if cl and i == 0 and not im2col and not clin:
                x = x.contiguous(memory_format=torch.channels_last)
            gamma, beta = p[f"{i}.1.weight"], p[f"{i}.1.bias"]
            if bnpool:  # BN's per-channel affine map is monotone: pool first (see the docstring)
                sign = torch.where(gamma.detach() >= 0, 1.0, -1.0).view(1, -1, 1, 1)
                x = x * sign  # (a real implementation would fold the sign into the conv weights)
                var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0, keepdim=True)
                scale = (gamma.view(1, -1, 1, 1) * sign) * torch.rsqrt(var + 1e-5)
                x = F.relu((F.max_pool2d(x, 2) - mean) * scale + beta.view(1, -1, 1, 1))
                continue
            x = F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
            if poolrelu:
                x = F.relu(F.max_pool2d(x, 2))
            else:
                x = F.max_pool2d(F.relu(x), 2)
        x = x.flatten(1)
        return F.linear(x, p["5.weight"], p["5.bias"])

    return fwd


def make_meta_gradient(opts: set[str]):
    import torch
    import torch.nn.functional as F
    fwd = make_forward(opts)
    if "compile" in opts:
        fwd = torch.compile(fwd, dynamic=False)
    cl_q = bool(opts & {"cl", "clq", "clin", "clinq"})  # ...q: channels-last for the query sets only
    cl_s = bool(opts & {"cl", "clin"})
    clin = bool(opts & {"clin", "clinq"})

    def to_cl(x, on):  # channels-last *strides* even for one channel (.contiguous() keeps NCHW there)
        return torch.empty_like(x, memory_format=torch.channels_last).copy_(x) if on and clin else x
    nobias = "nobias" in opts

    def meta_gradient(model, x_s, y_s, x_q, y_q, alpha, steps, first_order):
        theta = {k: v.detach() for k, v in model.named_parameters()}
        if nobias:
            theta = {k: v for k, v in theta.items() if not (k.endswith(".0.bias") and k[0] in "0123")}
        b = x_s.shape[0]
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        total = {k: torch.zeros_like(v) for k, v in theta.items()}
        if "batch1" in opts:
            G = _batched_first_step(fwd, leaves, x_s, y_s, alpha, first_order, cl_s)
            U = {k: torch.empty((b, *v.shape)) for k, v in leaves.items()}
        for i in range(b):
            p = leaves
            for s in range(steps):
                if s == 0 and "batch1" in opts:  # theta'_i from the batched step, as a new leaf
                    p = {k: (v.detach() - alpha * G[k][i].detach()).requires_grad_(True)
                         for k, v in leaves.items()}
                    p1 = p
                    continue
                loss = F.cross_entropy(fwd(p, to_cl(x_s[i], cl_s), cl_s), y_s[i])
                gs = torch.autograd.grad(loss, list(p.values()), create_graph=not first_order)
                p = {k: v - alpha * g for (k, v), g in zip(p.items(), gs)}
            li = F.cross_entropy(fwd(p, to_cl(x_q[i], cl_q), cl_q), y_q[i])
            if "batch1" in opts:  # u_i = dL_Q / d theta'^(1)_i; the rest through G at the end
                gs = torch.autograd.grad(li, list(p1.values()))
                for k, g in zip(p1, gs):
                    total[k] += g
                    U[k][i] = g
            else:
                gs = torch.autograd.grad(li, list(leaves.values()))
                for k, g in zip(leaves, gs):
                    total[k] += g
        if "batch1" in opts and not first_order:  # - alpha * sum_i H_i u_i, one batched backward
            hv = torch.autograd.grad(list(G.values()), list(leaves.values()),
                                     grad_outputs=[U[k] for k in G], allow_unused=True)
            for k, h in zip(leaves, hv):
                if h is not None:
                    total[k] -= alpha * h
        out = {k: v / b for k, v in total.items()}
        for k, v in model.named_parameters():
            if k not in out:
                out[k] = torch.zeros_like(v)
        return out

    return meta_gradient


def _batched_first_step(fwd, leaves, x_s, y_s, alpha, first_order, cl=False):
    """The first inner step of all tasks at once (the weights theta are shared there).

    ``vmap(grad(support loss), in_dims=(None, 0, 0))``: with theta unbatched, vmap folds the task
    dimension into the batch, so every conv's forward is one conv over all B support sets, and
    BatchNorm keeps per-task statistics (vmap's batch-norm rule). Returns the stacked per-task
    gradients G (B, ...) per parameter; for second order G keeps its graph back to ``leaves``
    (ordinary autograd through ``vmap(grad)``, not ``grad(vmap(grad))``).
    """
    import torch
    import torch.nn.functional as F
    from torch.func import grad, vmap

    def support_loss(p, xs, ys):
        return F.cross_entropy(fwd(p, xs, cl), ys)

    src = {k: v.detach() for k, v in leaves.items()} if first_order else leaves
    return vmap(grad(support_loss), in_dims=(None, 0, 0))(src, x_s, y_s)


# ----------------------------------------------------------------------------- one measurement

def measure_one(variant: str, steps: int, first_order: bool, meta_batch: int, repeats: int,
                threads: int) -> dict:
    import torch
    sys.path.insert(0, str(ROOT))
    from course_utils import maml
    torch.set_num_threads(threads)
    model, batch, alpha, loss = _setup(meta_batch)
    maml.keep_freed_cpu_memory()
    if variant == "course":
        fn = lambda: maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, loss=loss,  # noqa: E731
                                        first_order=first_order, strategy="loop")[1]
    else:
        mg = make_meta_gradient(set(variant.split("+")) - {"func"})
        fn = lambda: mg(model, *batch, alpha, steps, first_order)  # noqa: E731
    try:
        got = {k: v.detach().clone() for k, v in fn().items()}
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    c0 = time.process_time()
    for _ in range(repeats):
        fn()
    cpu = (time.process_time() - c0) / repeats
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ref = maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, loss=loss, first_order=first_order,
                             strategy="loop")[1]
    diff = max((got[k] - ref[k]).abs().max().item() for k in ref)
    scale = max(ref[k].abs().max().item() for k in ref)
    return {"cpu_s_per_step": cpu, "peak_mb": peak, "max_abs_diff": diff, "grad_scale": scale}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["course", "clin", "clinq", "clin+nobias+poolrelu"])
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--orders", nargs="+", default=["second", "first"])
    ap.add_argument("--meta-batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    ap.add_argument("--one", nargs=3, metavar=("VARIANT", "STEPS", "ORDER"))
    args = ap.parse_args(argv)
    if args.one:
        v, s, o = args.one
        print("RESULT " + json.dumps(measure_one(v, int(s), o == "first", args.meta_batch, args.repeats,
                                                  args.threads)))
        return 0
    rows = []
    for steps in args.steps:
        for order in args.orders:
            for v in args.variants:
                cmd = [sys.executable, __file__, "--one", v, str(steps), order, "--repeats", str(args.repeats),
                       "--threads", str(args.threads), "--meta-batch", str(args.meta_batch)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                      env={**os.environ, "COURSE_QUIET": "1"})
                line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                res = json.loads(line[-1][7:]) if line else {"skipped": proc.stderr.strip().splitlines()[-1:]}
                row = {"variant": v, "steps": steps, "order": order, **res}
                rows.append(row)
                print(json.dumps(row), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    name = "maml_speed_ideas" + (f"_{args.tag}" if args.tag else "")
    (OUT / f"{name}.json").write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1))
    base = {(r["steps"], r["order"]): r for r in rows if r["variant"] == "course" and "skipped" not in r}
    lines = [f"Conv-4 5-way 1-shot 15 queries, meta-batch {args.meta_batch}, torch threads {args.threads}, "
             f"{args.repeats} timed meta-gradients after one warm-up; CPU s / step = process CPU time. "
             f"Command: `python benchmarks/maml_speed_ideas.py {' '.join(sys.argv[1:])}`", "",
             "| steps | order | variant | CPU s / step | speed-up vs course | peak MB | max abs diff vs course |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['steps']} | {r['order']} | {r['variant']} | skipped: {r['skipped']} | | | |")
            continue
        b = base.get((r["steps"], r["order"]))
        sp = f"{b['cpu_s_per_step'] / r['cpu_s_per_step']:.2f}x" if b else ""
        lines.append(f"| {r['steps']} | {r['order']} | {r['variant']} | {r['cpu_s_per_step']:.3f} | {sp} | "
                     f"{r['peak_mb']:.0f} | {r['max_abs_diff']:.1e} (of {r['grad_scale']:.1e}) |")
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
