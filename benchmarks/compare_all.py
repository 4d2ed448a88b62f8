"""Every few-shot classifier of chapters 00-06 and 08 on the same 5-way 1-shot tasks, with the same training budget.

    OMNIGLOT_DIR=../shared/data/omniglot .venv/bin/python benchmarks/compare_all.py \
        [--source glyphs omniglot] [--seconds 90] [--episodes 600] [--hidden 32] [--threads 1]

The protocol, the same for every method:

* **Tasks.** 5-way 1-shot episodes with 15 queries per class, drawn from the meta-test classes
  with one seed, so every method answers the very same ``--episodes`` tasks (the script checks this
  by fingerprinting the classes of each episode). Accuracy is the mean over episodes with a 95%
  interval (mean +- 1.96 s / sqrt(n)).
* **Budget.** Each method trains from scratch for ``--seconds`` of wall-clock time on the same
  machine and thread count, whatever that buys it (the steps column says how many); pixel 1-NN
  trains for no time at all. Methods built on pre-trained features (the linear head, LEO) spend
  their budget on pre-training too. Test-time adaptation (MAML's and Reptile's inner loops, the
  meta-learner's steps, the linear head's fit) is not part of the budget.
* **Network.** The same Conv-4 (``--hidden`` channels, 28 x 28 inputs) for every learned method,
  recipes as in the chapters' quick budget (learning rates, inner steps, meta-batches), except two
  that the chapters' benchmarks chose: first-order MAML with a zero head, alpha 0.1 and 5 inner steps
  (benchmarks/first_order_curves.py, chapter 03), and Reptile with the paper's inner Adam recipe
  (benchmarks/reptile_curves.py, chapter 05; the chapter's own runs use SGD). The black-box learners of
  chapter 08 put their LSTM or causal transformer on top of the same Conv-4 and train it end to end on
  5-way 1-shot episodes (their output size fixes N, so they cannot train 20-way like ProtoNet).

Without ``OMNIGLOT_DIR`` the Omniglot column is skipped with the reason. Each source's results go to
``benchmarks/out/compare_all_<source>.json``; the report ``benchmarks/out/compare_all.md`` is rebuilt
from all result files present, so the two sources can run in two processes side by side.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils import baselines, black_box, leo, maml, matching, nets, omniglot, protonet, reptile, siamese  # noqa: E402
from course_utils.datasets import FewShotData, few_shot_data  # noqa: E402
from course_utils.devices import describe_device, pick_device, seed_everything  # noqa: E402
from course_utils.episodes import ClassSet, Episode, EpisodeSampler  # noqa: E402
from course_utils.episodic import embed_class_set, train_episodic  # noqa: E402
from course_utils.evaluation import evaluate  # noqa: E402
from course_utils.meta_lstm import MetaLSTM  # noqa: E402
from course_utils.training import train_loop  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
N_WAY, K_SHOT, Q_QUERY = 5, 1, 15
MANY = 10 ** 9          # "steps" when the time budget is what stops training


@dataclass
class Setup:
    data: FewShotData
    seconds: float
    hidden: int
    device: torch.device
    seed: int


@dataclass
class Trained:
    classify: Callable[[Episode], Tensor]
    test: ClassSet               # the meta-test classes as this classifier takes them (images or features)
    steps: str                   # what the budget bought, in the method's own unit
    seconds: float


def _learner(s: Setup) -> torch.nn.Module:
    return nets.conv4_classifier(N_WAY, hidden=s.hidden, batch_stats_only=True).to(s.device)


# ----------------------------------------------------------------------------- the methods

def pixel_nn(s: Setup) -> Trained:
    """Chapter 00: the label of the nearest support image in pixel space."""
    return Trained(baselines.pixel_nn_classify, s.data.test, "-", 0.0)


def linear_head(s: Setup) -> Trained:
    """Chapter 00: pre-train Conv-4 on all meta-train classes; per episode, fit softmax regression."""
    net, hist = baselines.pretrain_embedding(s.data.train, MANY, 64, 2e-3, s.hidden, s.device, s.seed,
                                             max_seconds=s.seconds)
    return Trained(lambda ep: baselines.linear_head_logits(ep.to("cpu")), embed_class_set(net, s.data.test, s.device),
                   f"{len(hist.values['loss'])} batches of 64", hist.seconds)


def _pairs(s: Setup, net: torch.nn.Module, loss, lr: float) -> tuple[ClassSet, str, float]:
    hist = siamese.train_pairs(net, s.data.train, loss, MANY, 32, lr=lr, seed=s.seed, max_seconds=s.seconds,
                               desc=type(net).__name__)
    return embed_class_set(net.embed, s.data.test, s.device), f"{len(hist.values['loss'])} batches of 32 pairs", \
        hist.seconds


def siamese_contrastive(s: Setup) -> Trained:
    """Chapter 01: Siamese Conv-4, contrastive loss (margin 8); 1-NN in the embedding."""
    torch.manual_seed(s.seed)
    net = siamese.SiameseNet(nets.conv4(1, s.hidden)).to(s.device)
    test, steps, sec = _pairs(s, net, siamese.contrastive_objective(8.0), 1e-3)
    return Trained(protonet.classify_embedded, test, steps, sec)


def koch(s: Setup) -> Trained:
    """Chapter 01: Koch et al.'s verification net (weighted L1 + sigmoid); the best-scoring support."""
    torch.manual_seed(s.seed)
    net = siamese.VerificationNet(nets.conv4(1, s.hidden)).to(s.device)
    test, steps, sec = _pairs(s, net, siamese.verification_objective, 1e-2)
    return Trained(siamese.verification_classifier(net, embedded=True), test, steps, sec)


def _episodic(s: Setup, model: torch.nn.Module, loss) -> tuple[ClassSet, str, float]:
    hist = train_episodic(model, loss, s.data.train, 20, 1, 5, steps=MANY, lr=3e-3, device=s.device, seed=s.seed,
                          desc=type(model).__name__, max_seconds=s.seconds)
    model.eval()
    return embed_class_set(model.encoder, s.data.test, s.device), f"{len(hist.values['loss'])} 20-way episodes", \
        hist.seconds


def matching_nets(s: Setup) -> Trained:
    """Chapter 02: Matching Networks (cosine attention, s = 10, no FCE), 20-way 1-shot training episodes."""
    torch.manual_seed(s.seed)
    scale = 10.0
    test, steps, sec = _episodic(s, matching.MatchingNet(nets.conv4(1, s.hidden), scale=scale), matching.matching_loss)

    def classify(ep: Episode) -> Tensor:
        return matching.attention_predict(matching.cosine_attention(ep.query_x, ep.support_x, scale), ep.support_y,
                                          ep.n_way)
    return Trained(classify, test, steps, sec)


def prototypical(s: Setup) -> Trained:
    """Chapter 02: Prototypical Networks, 20-way 1-shot training episodes."""
    torch.manual_seed(s.seed)
    test, steps, sec = _episodic(s, protonet.ProtoNet(nets.conv4(1, s.hidden)), protonet.protonet_loss)
    return Trained(protonet.classify_embedded, test, steps, sec)


# MAML's recipes (benchmarks/first_order_curves.py compares them at equal meta-iterations):
# order -> (alpha, zero head, inner steps in training, at test); meta-batch 4, Adam 1e-3
MAML_RECIPES = {"second": (0.4, False, 1, 3), "first": (0.1, True, 5, 5)}


def _maml(s: Setup, first_order: bool) -> Trained:
    torch.manual_seed(s.seed)
    model = _learner(s)
    alpha, zero, steps, test_steps = MAML_RECIPES["first" if first_order else "second"]
    learner = maml.MAML(model, alpha, steps, test_steps, first_order, loss="cross_entropy", zero_head=zero)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = EpisodeSampler(s.data.train, N_WAY, K_SHOT, 5, batch_size=4, seed=s.seed)

    def step(_: int) -> dict[str, float]:
        b = next(batches).to(s.device)
        return {"loss": learner.meta_step(opt, b.support_x, b.support_y, b.query_x, b.query_y)}
    hist = train_loop(step, MANY, desc="FOMAML" if first_order else "MAML", max_seconds=s.seconds)
    return Trained(learner.classify, s.data.test, f"{len(hist.values['loss'])} meta-batches of 4", hist.seconds)


def maml_second_order(s: Setup) -> Trained:
    """Chapter 03: MAML, alpha 0.4 (on the mean loss), 1 inner step (3 at test), meta-batch 4, Adam 1e-3."""
    return _maml(s, first_order=False)


def maml_first_order(s: Setup) -> Trained:
    """Chapter 03: first-order MAML with the head kept at zero (Kao et al.'s zeroing trick), alpha 0.1 and
    5 inner steps (5 at test); meta-batch and optimiser as MAML."""
    return _maml(s, first_order=True)


def meta_lstm(s: Setup) -> Trained:
    """Chapter 04: the Meta-learner LSTM, T = 5 learned steps, one episode per meta-step, Adam 3e-3."""
    torch.manual_seed(s.seed)
    meta = MetaLSTM(_learner(s)).to(s.device)
    opt = torch.optim.Adam(meta.parameters(), lr=3e-3)
    batches = EpisodeSampler(s.data.train, N_WAY, K_SHOT, 5, batch_size=1, seed=s.seed)

    def step(_: int) -> dict[str, float]:
        b = next(batches).to(s.device)
        return {"loss": meta.meta_step(opt, b.support_x, b.support_y, b.query_x, b.query_y, 5, 0.25)}
    hist = train_loop(step, MANY, desc="Meta-learner LSTM", max_seconds=s.seconds)
    return Trained(lambda ep: meta.classify(ep, 5), s.data.test, f"{len(hist.values['loss'])} episodes", hist.seconds)


_TRAINED_REPTILE: dict[tuple, tuple[reptile.Reptile, int, float]] = {}   # one training serves both Reptile rows


def _trained_reptile(s: Setup) -> tuple[reptile.Reptile, int, float]:
    """Reptile trained for the budget (once per setup): the learner, its meta-batches and seconds."""
    key = (id(s.data), s.seconds, s.hidden, s.seed, str(s.device))
    if key not in _TRAINED_REPTILE:
        torch.manual_seed(s.seed)
        learner = reptile.Reptile(_learner(s), 1e-3, 5, 1.0, optimizer="adam", inner_batch_size=10, test_steps=50,
                                  test_batch_size=5, loss="cross_entropy", seed=s.seed)
        batches = EpisodeSampler(s.data.train, N_WAY, 9, 1, batch_size=5, seed=s.seed)
        t0 = time.perf_counter()

        def step(_: int) -> dict[str, float]:
            b = next(batches).to(s.device)
            x, y = torch.cat([b.support_x, b.query_x], 1), torch.cat([b.support_y, b.query_y], 1)
            return learner.meta_step(x, y, max(0.0, 1.0 - (time.perf_counter() - t0) / s.seconds))
        hist = train_loop(step, MANY, desc="Reptile", max_seconds=s.seconds)
        _TRAINED_REPTILE.clear()
        _TRAINED_REPTILE[key] = (learner, len(hist.values["loss"]), hist.seconds)
    return _TRAINED_REPTILE[key]


def reptile_(s: Setup) -> Trained:
    """Chapter 05: Reptile with the paper's inner loop: 5 Adam steps (lr 1e-3, beta1 0, state carried
    across tasks) on minibatches of 10 from 10 images per class, meta-batch 5, eps 1 -> 0 linearly over
    the time budget; 50 steps on the support set at test, queries classified together (transductive)."""
    learner, n, sec = _trained_reptile(s)
    return Trained(learner.classify, s.data.test, f"{n} meta-batches of 5", sec)


def reptile_symmetric(s: Setup) -> Trained:
    """Chapter 05: the same trained Reptile, tested with every head row set to the rows' mean before
    adaptation (the head then favours no label; not the paper's method)."""
    learner, n, sec = _trained_reptile(s)
    tester = copy.copy(learner)          # shares the model and the carried Adam state
    tester.symmetric_head = True
    return Trained(tester.classify, s.data.test, f"{n} meta-batches of 5 (the same run)", sec)


def leo_(s: Setup) -> Trained:
    """Chapter 06: half the budget pre-trains Conv-4 on 400 meta-train classes, the rest (after
    embedding 600 others) meta-trains LEO (n_z = 16, gradient norm clipped at 0.1) on their features."""
    t0 = time.perf_counter()
    order = torch.randperm(len(s.data.train), generator=torch.Generator().manual_seed(s.seed)).tolist()
    n_pre = min(400, len(s.data.train) // 2)
    net, pre = baselines.pretrain_embedding(s.data.train.subset(order[:n_pre]), MANY, 64, 1e-3, s.hidden, s.device,
                                            s.seed, max_seconds=s.seconds / 2)
    meta_classes = embed_class_set(net, s.data.train.subset(order[n_pre:n_pre + 600]), s.device)
    torch.manual_seed(s.seed)
    model = leo.LEO(meta_classes.item_shape[0], n_z=16, alpha=2.0, eta=0.3).to(s.device)
    left = max(s.seconds - (time.perf_counter() - t0), 1.0)
    hist = train_episodic(model, leo.episode_loss, meta_classes, N_WAY, K_SHOT, 15, steps=MANY, lr=3e-3,
                          device=s.device, seed=s.seed, desc="LEO", max_seconds=left, clip_grad_norm=0.1)
    model.eval()
    seconds = time.perf_counter() - t0
    return Trained(lambda ep: leo.leo_forward(model, ep).logits, embed_class_set(net, s.data.test, s.device),
                   f"{len(pre.values['loss'])} batches + {len(hist.values['loss'])} episodes", seconds)


def _black_box(s: Setup, learner: torch.nn.Module, name: str) -> Trained:
    torch.manual_seed(s.seed)
    encoder = nets.conv4(1, s.hidden)
    model = black_box.BlackBoxLearner(encoder, learner, N_WAY, seed=s.seed).to(s.device)
    hist = train_episodic(model, black_box.black_box_loss, s.data.train, N_WAY, K_SHOT, Q_QUERY, steps=MANY,
                          lr=1e-3, device=s.device, seed=s.seed, desc=name, max_seconds=s.seconds)
    model.eval()
    return Trained(lambda ep: model(ep), s.data.test, f"{len(hist.values['loss'])} 5-way episodes", hist.seconds)


def black_box_lstm(s: Setup) -> Trained:
    """Chapter 08: Conv-4 + LSTM reading the shuffled labelled supports, then each query (CS330 HW1)."""
    torch.manual_seed(s.seed)
    dim = nets.embedding_dim(nets.conv4(1, s.hidden))
    return _black_box(s, black_box.BlackBoxLSTM(dim, N_WAY, hidden=128), "black-box LSTM")


def black_box_transformer(s: Setup) -> Trained:
    """Chapter 08: Conv-4 + a 2-layer causal transformer over the same sequences."""
    torch.manual_seed(s.seed)
    dim = nets.embedding_dim(nets.conv4(1, s.hidden))
    return _black_box(s, black_box.BlackBoxTransformer(dim, N_WAY, d_model=64, layers=2), "black-box transformer")


METHODS: dict[str, tuple[str, Callable[[Setup], Trained]]] = {
    "pixel 1-NN": ("00", pixel_nn),
    "pre-trained Conv-4 + linear head": ("00", linear_head),
    "Siamese, contrastive loss": ("01", siamese_contrastive),
    "Koch verification net": ("01", koch),
    "Matching Networks": ("02", matching_nets),
    "Prototypical Networks": ("02", prototypical),
    "MAML, second order": ("03", maml_second_order),
    "MAML, first order": ("03", maml_first_order),
    "Meta-learner LSTM": ("04", meta_lstm),
    "Reptile": ("05", reptile_),
    "Reptile, symmetric head at test": ("05", reptile_symmetric),
    "LEO": ("06", leo_),
    "Black-box LSTM": ("08", black_box_lstm),
    "Black-box transformer": ("08", black_box_transformer),
}


# ----------------------------------------------------------------------------- protocol and report

def task_fingerprint(classes: ClassSet, n_episodes: int, seed: int) -> str:
    """A hash of the classes and example counts behind the seeded test episodes: equal means same tasks."""
    sampler = EpisodeSampler(classes, N_WAY, K_SHOT, Q_QUERY, seed=seed)
    names = [",".join(next(sampler).classes) for _ in range(n_episodes)]
    counts = ",".join(str(len(classes.examples(c))) for c in range(len(classes)))
    return hashlib.sha256(("\n".join(names) + counts).encode()).hexdigest()[:12]


def run_source(source: str, args: argparse.Namespace, device: torch.device) -> dict:
    data = few_shot_data(source)
    s = Setup(data, args.seconds, args.hidden, device, args.seed)
    reference = task_fingerprint(data.test, args.episodes, args.seed)
    rows = {}
    for name, (chapter, method) in METHODS.items():
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        seed_everything(args.seed)
        trained = method(s)
        got = task_fingerprint(trained.test, args.episodes, args.seed)
        if got != reference:
            raise RuntimeError(f"{name} would be tested on other tasks ({got} != {reference}).")
        t0 = time.perf_counter()
        acc = evaluate(trained.classify, trained.test, N_WAY, K_SHOT, Q_QUERY, args.episodes, seed=args.seed,
                       device=device, desc=name)
        rows[name] = {"chapter": chapter, "mean": acc.mean, "ci95": acc.ci95, "n": acc.n, "steps": trained.steps,
                      "train_s": trained.seconds, "eval_s": time.perf_counter() - t0}
        print(f"{source:8s} {name:34s} {acc}  ({trained.steps}, {trained.seconds:.0f} s)", flush=True)
    return {"source": source, "note": data.note, "test_classes": len(data.test), "tasks": reference,
            "episodes": args.episodes, "seconds": args.seconds, "hidden": args.hidden, "threads":
            torch.get_num_threads(), "device": describe_device(device), "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "command": "python benchmarks/compare_all.py " + " ".join(args.argv), "rows": rows}


def report(results: list[dict]) -> str:
    """The markdown report of one or more sources' results (same methods, one column per source)."""
    if not results:
        return "# All algorithms, 5-way 1-shot\n\nNo results yet: run benchmarks/compare_all.py.\n"
    lines = ["# All algorithms on the same 5-way 1-shot tasks, same training budget", ""]
    for r in results:
        lines.append(f"- **{r['source']}**: `{r['command'].strip()}` on {r['device']}, {r['machine']}, "
                     f"{r['date']}. {r['test_classes']} meta-test classes, {r['episodes']} episodes "
                     f"(task fingerprint `{r['tasks']}`), 15 queries per class; training budget {r['seconds']:g} s "
                     f"per method, Conv-4 with {r['hidden']} channels.")
    lines += ["", "Accuracy: mean over the episodes ± 95% interval. Every method of a column answered the very "
              "same episodes. The steps are what the time budget bought each method; they depend on the machine and "
              "on its load at the time (reruns with `--only` can differ), so look at them before reading much "
              "into small differences.", ""]
    head = "| chapter | method | " + " | ".join(f"{r['source']} | training steps" for r in results) + " |"
    lines += [head, "|" + "---|" * (2 + 2 * len(results))]
    names = [n for n in METHODS if any(n in r["rows"] for r in results)]
    for name in names:
        cells = []
        for r in results:
            row = r["rows"].get(name)
            cells += ["-", "-"] if row is None else \
                [f"{100 * row['mean']:.1f} ± {100 * row['ci95']:.1f}%", f"{row['steps']} ({row['train_s']:.0f} s)"]
        lines.append(f"| {METHODS[name][0]} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def merge(new: dict, path: Path) -> dict:
    """With ``--only``, keep the other methods' rows of an earlier run on the same tasks and budget."""
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    same = all(old.get(k) == new[k] for k in ("tasks", "episodes", "seconds", "hidden", "threads", "device"))
    if not same or set(new["rows"]) == set(METHODS):
        return new
    rows = {name: new["rows"].get(name, old["rows"].get(name)) for name in METHODS}
    return {**new, "rows": {k: v for k, v in rows.items() if v is not None},
            "command": old["command"] + "; then " + new["command"]}


def load_results(out_dir: Path) -> list[dict]:
    order = {"glyphs": 0, "omniglot": 1}
    found = [json.loads(p.read_text()) for p in sorted(out_dir.glob("compare_all_*.json"))]
    return sorted(found, key=lambda r: order.get(r["source"], 9))


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", nargs="+", default=["glyphs", "omniglot"], choices=["glyphs", "omniglot"])
    ap.add_argument("--seconds", type=float, default=90.0, help="training time per method")
    ap.add_argument("--episodes", type=int, default=600, help="test episodes")
    ap.add_argument("--hidden", type=int, default=32, help="Conv-4 channels")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="run only methods whose name contains one of these")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for the results and the report")
    ap.add_argument("--report", action="store_true", help="only rebuild the report from the result files")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.seconds <= 0 or args.episodes < 2 or args.hidden < 1:
        ap.error("--seconds must be > 0, --episodes >= 2 and --hidden >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device()
    args.out.mkdir(parents=True, exist_ok=True)
    for source in [] if args.report else args.source:
        if source == "omniglot" and not omniglot.available():
            print(f"skipping omniglot: {omniglot.why_unavailable()}")
            continue
        result = merge(run_source(source, args, device), args.out / f"compare_all_{source}.json")
        (args.out / f"compare_all_{source}.json").write_text(json.dumps(result, indent=1))
    text = report(load_results(args.out))
    (args.out / "compare_all.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
