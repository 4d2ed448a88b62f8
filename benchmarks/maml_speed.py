"""MAML meta-training speed and memory: course_utils.maml against a plain loop, `higher` and learn2learn.

Configurations (issue 4): Omniglot-shaped 5-way 1-shot, 15 queries per class, meta-batch 32, Conv-4
with 64 filters and batch-statistics BatchNorm; and Finn et al.'s sinusoid MLP, K = 10, meta-batch 25.
Each with 1 and 5 inner steps, second and first order. One *meta-step* = the meta-gradient of a
meta-batch plus an Adam step.

Implementations
- ``course auto``: ``maml.MAML.meta_step`` with ``strategy="auto"`` (what the course uses);
- ``course vmap`` / ``course loop``: the two strategies forced;
- ``plain loop``: the textbook version, ``torch.autograd.grad(create_graph=True)`` per inner step, every
  task's graph kept and one ``backward`` at the end (like exercise 3.3);
- ``higher``: ``higher.innerloop_ctx`` (Grefenstette et al., 2019), one backward per task. Only if it
  imports: install it *outside* the course environment, e.g.
  ``pip install --no-deps --target benchmarks/out/site higher`` (this script adds that folder).
- ``learn2learn``: ``learn2learn.algorithms.MAML`` (Arnold et al., 2020) as in learn2learn's own MAML
  example: ``maml = l2l.algorithms.MAML(model, lr=alpha, first_order=...)`` once, then per task
  ``learner = maml.clone()``, ``learner.adapt(support_loss)`` per inner step and
  ``query_loss.backward()`` (gradients accumulate in the model's ``.grad``, then divided by B).
  learn2learn is *not* a course dependency and is not installed: ``pip install learn2learn`` pulls a
  CUDA torch, its C extensions do not build on Python 3.11, and ``import learn2learn`` needs
  torchvision. Its ``algorithms`` package is pure Python, so this script imports it from the
  unpacked sdist (a bare ``learn2learn`` package module whose ``__path__`` is the sdist's
  ``learn2learn`` folder; nothing else of the package is imported)::

      pip download learn2learn==0.2.0 --no-deps --no-binary :all: -d /tmp/l2l
      tar xzf /tmp/l2l/learn2learn-0.2.0.tar.gz -C benchmarks/out/site

  (``$L2L_SRC`` may name another unpacked ``learn2learn-*`` folder.) Without it, it is skipped.

An implementation that does not import is skipped with the reason printed and in the table.

On Linux every implementation runs with ``maml.keep_freed_cpu_memory()`` (glibc keeps freed memory
instead of page-faulting it in again for every task); ``COURSE_MALLOC_TUNING=0`` measures without.

Before timing, every implementation's meta-gradient is compared with ``course auto`` on the same
meta-batch (max abs difference is reported). ``course auto`` feeds conv nets channels-last images on the CPU, so on
Conv-4 the others differ from it by float32 rounding (up to ~5e-3 of 2.2 at one second-order step);
``tests/test_maml.py`` checks that the two layouts agree to 1e-10 in float64. Every (implementation, configuration) runs in its own
process so that peak memory (max RSS on the CPU, ``max_memory_allocated`` on CUDA) is its own.

Usage::

    python benchmarks/maml_speed.py                       # everything (long on a CPU)
    python benchmarks/maml_speed.py --only conv --steps 1 --repeats 1 --threads 1
    python benchmarks/maml_speed.py --device cuda

Writes ``benchmarks/out/maml_speed.json`` and ``.md`` (``maml_speed_sine.*`` with ``--only sine``;
``--name`` to choose) and prints the markdown table.
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
SITE = OUT / "site"
IMPLS = ("course auto", "course loop", "course vmap", "plain loop", "higher", "learn2learn")


# ----------------------------------------------------------------------------- one measurement

def _setup(model_kind: str, meta_batch: int, device):
    import torch
    from course_utils import nets, sinusoid
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if model_kind == "conv":
        model = nets.conv4_classifier(5, hidden=64, batch_stats_only=True).to(device)
        x = torch.rand(meta_batch, 5 + 75, 1, 28, 28, generator=g).to(device)
        lab = torch.arange(5, device=device)
        batch = (x[:, :5], lab.repeat(meta_batch, 1), x[:, 5:],
                 lab.repeat_interleave(15).repeat(meta_batch, 1))
        return model, batch, 0.4, "cross_entropy"
    model = nets.sine_mlp().to(device)
    b = sinusoid.sample_sine_tasks(meta_batch, 10, 10, g, device=device)
    return model, b.tensors(), 0.01, "mse"


def _plain_loop(model, batch, alpha, steps, loss, first_order):
    """Textbook MAML: every task's graph kept, one backward at the end."""
    import torch
    from torch.func import functional_call
    from course_utils.maml import resolve_loss
    lf = resolve_loss(loss)
    x_s, y_s, x_q, y_q = batch
    theta = dict(model.named_parameters())
    total = 0.0
    for i in range(x_s.shape[0]):
        p = theta
        for _ in range(steps):
            g = torch.autograd.grad(lf(functional_call(model, p, (x_s[i],)), y_s[i]), list(p.values()),
                                    create_graph=not first_order)
            p = {k: v - alpha * gk for (k, v), gk in zip(p.items(), g)}
        total = total + lf(functional_call(model, p, (x_q[i],)), y_q[i])
    total = total / x_s.shape[0]
    return dict(zip(theta, torch.autograd.grad(total, list(theta.values()))))


def _higher(model, batch, alpha, steps, loss, first_order):
    import higher
    import torch
    from course_utils.maml import resolve_loss
    lf = resolve_loss(loss)
    x_s, y_s, x_q, y_q = batch
    inner_opt = torch.optim.SGD(model.parameters(), lr=alpha)
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(x_s.shape[0]):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                  track_higher_grads=not first_order) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(lf(fmodel(x_s[i]), y_s[i]))
            q = lf(fmodel(x_q[i]), y_q[i]) / x_s.shape[0]
            if first_order:  # higher's first order: gradient at the adapted weights, applied to theta
                gs = torch.autograd.grad(q, list(fmodel.parameters()))
            else:
                gs = torch.autograd.grad(q, params)
        for t, g in zip(total, gs):
            t += g
    return {k: t for (k, _), t in zip(model.named_parameters(), total)}


def _import_learn2learn_maml():
    """``learn2learn.algorithms.MAML`` from an unpacked sdist, without importing the rest of learn2learn."""
    import importlib
    import types
    src = Path(os.environ.get("L2L_SRC") or next(iter(sorted(SITE.glob("learn2learn-*"))), SITE / "learn2learn-0.2.0"))
    pkg_dir = src / "learn2learn"
    if not (pkg_dir / "algorithms" / "maml.py").is_file():
        raise ImportError(f"no unpacked learn2learn sdist at {src} (see the module docstring)")
    if "learn2learn" not in sys.modules:
        pkg = types.ModuleType("learn2learn")
        pkg.__path__ = [str(pkg_dir)]  # a bare package: its __init__ (torchvision, gym, ...) never runs
        sys.modules["learn2learn"] = pkg
    return importlib.import_module("learn2learn.algorithms").MAML


def _learn2learn(maml, model, batch, alpha, steps, loss, first_order):
    """learn2learn's MAML example (examples/vision/maml_omniglot.py): clone, adapt, backward per task."""
    from course_utils.maml import resolve_loss
    lf = resolve_loss(loss)
    x_s, y_s, x_q, y_q = batch
    model.zero_grad(set_to_none=True)
    b = x_s.shape[0]
    for i in range(b):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(lf(learner(x_s[i]), y_s[i]))
        lf(learner(x_q[i]), y_q[i]).backward()
    for p in model.parameters():
        p.grad.mul_(1.0 / b)
    return {k: p.grad for k, p in model.named_parameters()}


def _meta_grad_fn(impl: str, model, batch, alpha, steps, loss, first_order):
    from course_utils import maml
    if impl.startswith("course"):
        strategy = impl.split()[1]
        return lambda: maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, loss=loss,
                                          first_order=first_order, strategy=strategy)[1]
    if impl == "plain loop":
        return lambda: _plain_loop(model, batch, alpha, steps, loss, first_order)
    if impl == "higher":
        sys.path.insert(0, str(SITE))
        import higher  # noqa: F401  (ImportError -> skipped)
        return lambda: _higher(model, batch, alpha, steps, loss, first_order)
    if impl == "learn2learn":
        maml_l2l = _import_learn2learn_maml()(model, lr=alpha, first_order=first_order)
        return lambda: _learn2learn(maml_l2l, model, batch, alpha, steps, loss, first_order)
    raise ValueError(impl)


def measure_one(impl: str, model_kind: str, steps: int, first_order: bool, meta_batch: int,
                repeats: int, device_name: str, threads: int) -> dict:
    import torch
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    model, batch, alpha, loss = _setup(model_kind, meta_batch, device)
    try:
        fn = _meta_grad_fn(impl, model, batch, alpha, steps, loss, first_order)
    except ImportError as e:
        print(f"skipping {impl}: not importable ({e})", file=sys.stderr)
        return {"skipped": f"{impl} not importable ({e})"}
    from course_utils import maml
    tuned = maml.keep_freed_cpu_memory() if device.type == "cpu" else False  # the same for every impl
    state0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def meta_step():
        grads = fn()
        for k, p in model.named_parameters():
            p.grad = grads[k]
        return grads

    got = {k: v.detach().clone() for k, v in meta_step().items()}  # warm-up, at the initial weights
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        meta_step()
        opt.step()
    sync()
    wall, cpu = (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    model.load_state_dict(state0)  # the agreement check, after the peak was taken
    ref = maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, loss=loss, first_order=first_order)[1]
    diff = max((got[k] - ref[k]).abs().max().item() for k in ref)
    scale = max(ref[k].abs().max().item() for k in ref)
    return {"steps_per_s": 1 / wall, "cpu_s_per_step": cpu, "peak_mb": peak / 2**20,
            "max_abs_diff": diff, "grad_scale": scale, "threads": torch.get_num_threads(),
            "malloc_tuned": tuned}


# ----------------------------------------------------------------------------- driver

def configs(only: str | None, steps_list: list[int], orders: list[str]):
    for kind, mb in (("conv", 32), ("sine", 25)):
        if only and kind != only:
            continue
        for steps in steps_list:
            for order in orders:
                yield kind, mb, steps, order == "first"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["conv", "sine"], help="one model only")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 5], help="inner steps")
    ap.add_argument("--orders", nargs="+", default=["second", "first"], choices=["second", "first"])
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--meta-batch-conv", type=int, default=32)
    ap.add_argument("--meta-batch-sine", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3, help="timed meta-steps after one warm-up")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every measurement this many times, interleaved; report the best")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-conv-vmap-over", type=int, default=1,
                    help="skip 'course vmap' on the conv net for more inner steps than this (CPU memory)")
    ap.add_argument("--name", help="output file stem in benchmarks/out (default maml_speed, or "
                    "maml_speed_sine with --only sine)")
    ap.add_argument("--one", nargs=5, metavar=("IMPL", "KIND", "STEPS", "ORDER", "META_BATCH"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        impl, kind, steps, order, mb = args.one
        res = measure_one(impl, kind, int(steps), order == "first", int(mb), args.repeats, args.device,
                          args.threads)
        print("RESULT " + json.dumps(res))
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    best: dict[tuple, dict] = {}
    for rnd in range(args.rounds):  # rounds interleave the implementations; the best of each is kept
        for kind, mb, steps, fo in configs(args.only, args.steps, args.orders):
            mb = args.meta_batch_conv if kind == "conv" else args.meta_batch_sine
            for impl in args.impls:
                if (impl == "course vmap" and kind == "conv" and args.device == "cpu"
                        and steps > args.skip_conv_vmap_over):
                    continue
                cmd = [sys.executable, __file__, "--one", impl, kind, str(steps), "first" if fo else "second",
                       str(mb), "--repeats", str(args.repeats), "--device", args.device,
                       "--threads", str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                      env={**os.environ, "COURSE_QUIET": "1"})
                line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                res = json.loads(line[-1][7:]) if line else {"skipped": proc.stderr.strip().splitlines()[-1:]}
                key = (kind, mb, steps, "first" if fo else "second", impl)
                row = {"model": kind, "meta_batch": mb, "inner_steps": steps,
                       "order": "first" if fo else "second", "impl": impl, **res}
                print(json.dumps({"round": rnd, **row}), flush=True)
                old = best.get(key)
                if old is None or "skipped" in old:
                    best[key] = row
                elif "skipped" not in row:
                    old["steps_per_s"] = max(old["steps_per_s"], row["steps_per_s"])
                    old["cpu_s_per_step"] = min(old["cpu_s_per_step"], row["cpu_s_per_step"])
                    old["peak_mb"] = max(old["peak_mb"], row["peak_mb"])
    rows = list(best.values())
    stem = args.name or ("maml_speed_sine" if args.only == "sine" else "maml_speed")
    (OUT / f"{stem}.json").write_text(json.dumps({"device": args.device, "argv": sys.argv[1:],
                                                     "rows": rows}, indent=1))
    table = to_markdown(rows, args)
    (OUT / f"{stem}.md").write_text(table + "\n")
    print(table)
    return 0


def to_markdown(rows: list[dict], args) -> str:
    head = ("| model | B | steps | order | implementation | meta-steps/s | CPU s / step | peak MB "
            "| max abs diff vs course |\n|---|---|---|---|---|---|---|---|---|")
    tuned = any(r.get("malloc_tuned") for r in rows)
    out = [f"Device: {args.device}; torch threads: {args.threads or 'default'}; "
           f"malloc tuning {'on' if tuned else 'off'} (all implementations); "
           f"best of {args.rounds} interleaved round(s) of {args.repeats} timed meta-steps after one "
           "warm-up; CPU s / step is process CPU time (robust on a shared machine). Command: "
           f"`python benchmarks/maml_speed.py {' '.join(sys.argv[1:])}`", "", head]
    for r in rows:
        cfg = f"| {r['model']} | {r['meta_batch']} | {r['inner_steps']} | {r['order']} | {r['impl']} "
        if "skipped" in r:
            out.append(cfg + f"| skipped: {r['skipped']} | | | |")
        else:
            out.append(cfg + f"| {r['steps_per_s']:.2f} | {r['cpu_s_per_step']:.3f} | {r['peak_mb']:.0f} "
                       f"| {r['max_abs_diff']:.1e} (of {r['grad_scale']:.1e}) |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
