"""Meta-learner LSTM vs MAML, 5-way 1-shot, same learner, episodes and test episodes (GPU recommended).

    OMNIGLOT_DIR=../shared/data/omniglot .venv/bin/python benchmarks/meta_lstm_omniglot.py \
        [--source omniglot|glyphs|auto] [--steps 20000] [--maml-steps 20000] [--width 32] [--T 5] \
        [--meta-batch 1] [--q-train 15] [--lr 1e-3] [--episodes 600] [--seed 0]

Writes benchmarks/out/meta_lstm_omniglot.md: accuracy (mean ± 95% interval over test episodes) of
the Meta-learner LSTM (Ravi & Larochelle 2017), second-order MAML (Finn et al. 2017; alpha 0.4,
1 inner step in training, 3 at test) and pixel 1-NN, with training times. Ravi & Larochelle
published miniImageNet numbers only (43.44 ± 0.77% 5-way 1-shot); there is no published Omniglot
number to compare with, so the table compares with MAML run here on the same tasks.
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
from course_utils import maml, nets  # noqa: E402
from course_utils.baselines import pixel_nn_classify  # noqa: E402
from course_utils.datasets import few_shot_data  # noqa: E402
from course_utils.devices import describe_device, pick_device, seed_everything  # noqa: E402
from course_utils.episodes import EpisodeSampler  # noqa: E402
from course_utils.evaluation import evaluate  # noqa: E402
from course_utils.meta_lstm import MetaLSTM  # noqa: E402
from course_utils.training import train_loop  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="omniglot", choices=["omniglot", "glyphs", "auto"])
    ap.add_argument("--steps", type=int, default=20000, help="Meta-learner LSTM meta-steps")
    ap.add_argument("--maml-steps", type=int, default=None, help="MAML meta-steps (default: --steps)")
    ap.add_argument("--width", type=int, default=32, help="filters per conv layer of the learner")
    ap.add_argument("--T", type=int, default=5, help="meta-learner steps per episode")
    ap.add_argument("--meta-batch", type=int, default=1)
    ap.add_argument("--q-train", type=int, default=15, help="queries per class in meta-training")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--episodes", type=int, default=600, help="meta-test episodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop each of the two meta-trainings after this long (the report says how far it got)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--out", default=str(OUT / "meta_lstm_omniglot.md"))
    a = ap.parse_args(argv)
    for name in ("steps", "width", "T", "meta_batch", "q_train", "episodes"):
        if getattr(a, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    maml_steps = a.maml_steps or a.steps
    limit = 60 * a.max_minutes if a.max_minutes else None
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = pick_device()
    seed_everything(a.seed)
    data = few_shot_data(a.source)
    print(data.note)

    def learner():
        return nets.conv4_classifier(5, hidden=a.width, batch_stats_only=True).to(device)

    def sampler():
        return EpisodeSampler(data.train, 5, 1, a.q_train, batch_size=a.meta_batch, seed=a.seed)

    torch.manual_seed(a.seed)
    meta = MetaLSTM(learner()).to(device)
    opt = torch.optim.Adam(meta.parameters(), lr=a.lr)
    eps = sampler()

    def ml_step(i):
        b = next(eps).to(device)
        return {"loss": meta.meta_step(opt, b.support_x, b.support_y, b.query_x, b.query_y, a.T)}
    ml_hist = train_loop(ml_step, a.steps, desc="Meta-learner LSTM", max_seconds=limit)

    torch.manual_seed(a.seed)
    model = learner()
    mm = maml.MAML(model, 0.4, 1, 3, loss="cross_entropy")
    opt2 = torch.optim.Adam(model.parameters(), lr=a.lr)
    eps2 = sampler()

    def maml_step(i):
        b = next(eps2).to(device)
        return {"loss": mm.meta_step(opt2, b.support_x, b.support_y, b.query_x, b.query_y)}
    maml_hist = train_loop(maml_step, maml_steps, desc="MAML", max_seconds=limit)

    done = {"ml": len(ml_hist.values["loss"]), "maml": len(maml_hist.values["loss"])}
    rows = [("Meta-learner LSTM", f"{done['ml']} x {a.meta_batch}", ml_hist.seconds,
             evaluate(lambda e: meta.classify(e, a.T), data.test, 5, 1, n_episodes=a.episodes, device=device)),
            ("MAML (second order)", f"{done['maml']} x {a.meta_batch}", maml_hist.seconds,
             evaluate(mm.classify, data.test, 5, 1, n_episodes=a.episodes, device=device)),
            ("pixel 1-NN", "-", 0.0, evaluate(pixel_nn_classify, data.test, 5, 1, n_episodes=a.episodes))]
    cmd = "python benchmarks/meta_lstm_omniglot.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Meta-learner LSTM vs MAML, 5-way 1-shot", "",
             f"Command: `{cmd.strip()}`  ",
             f"Data: {data.source} meta-test classes ({len(data.test)}), {a.episodes} episodes, 15 queries per class  ",
             f"Machine: {describe_device(device)}, {platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d')}  ",
             f"Learner: Conv-4, {a.width} filters, batch statistics; Meta-learner LSTM T = {a.T}, hidden 20, "
             f"clip 0.25; MAML alpha 0.4, 1 step (3 at test); Adam lr {a.lr}", "",
             "| method | episodes (steps x batch) | training time | 5-way 1-shot accuracy |",
             "|---|---|---|---|"]
    for name, n, sec, acc in rows:
        lines.append(f"| {name} | {n} | {sec:.0f} s | {acc} |")
    if done["ml"] < a.steps or done["maml"] < maml_steps:
        lines += ["", f"Stopped by --max-minutes {a.max_minutes:g}: the Meta-learner LSTM ran {done['ml']} of "
                  f"{a.steps} meta-steps and MAML {done['maml']} of {maml_steps}."]
    lines += ["", "Published (miniImageNet only, not comparable): Meta-learner LSTM 43.44 ± 0.77% "
              "(Ravi & Larochelle 2017); MAML 48.70 ± 1.84% (Finn et al. 2017)."]
    text = "\n".join(lines) + "\n"
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
