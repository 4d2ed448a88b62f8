"""Few-shot speech on synthesised speakers: accuracy vs SNR on held-out voices, and keyword spotting.

    .venv/bin/python benchmarks/speech_fewshot.py [--steps 1500] [--episodes 600] [--toy] [--out DIR]

Corpus: espeak-ng speakers (voice x variant x pitch x rate x range), split by voice (the test voices'
languages never occur in meta-training). Models, all scored by nearest prototype on the same seeded
episodes: the mean + std of log-mel over time (no learning); a 1-D conv encoder meta-trained with
ProtoNet on clean training-speaker episodes; the same trained on noise-augmented episodes (white or
babble at 0-20 dB). Speaker identification 5-way 1-shot and 5-shot (support and query words
disjoint) under clean, white and babble noise at 20/10/5/0 dB; keyword spotting 5-way 1-shot on
held-out words said by held-out speakers (support and query speakers disjoint). Mean ± 95% interval.
Writes benchmarks/out/speech_fewshot.md and .json. ``--toy``: a tiny corpus and a few steps (a test runs it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils import speech  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
SNRS = [20.0, 10.0, 5.0, 0.0]


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500, help="training episodes per model")
    ap.add_argument("--episodes", type=int, default=600, help="test episodes per cell")
    ap.add_argument("--toy", action="store_true", help="tiny corpus, few steps and episodes (seconds)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("COURSE_QUIET", "1")
    if not speech.available():
        print(speech.unavailable_reason())
        return ""
    wall0, cpu0 = time.time(), time.process_time()
    if a.toy:
        data = speech.load_speech(per_voice=2, words=speech.WORDS[:6] + speech.WORDS[16:21],
                                  voices={"train": ["en", "de", "fr", "es", "it", "pl"], "test": ["sk", "hu", "vi"],
                                          "babble": ["mt"]})
        steps, episodes, n_train_words = 20, 30, 6
    else:
        data = speech.load_speech()
        steps, episodes, n_train_words = a.steps, a.episodes, speech.N_TRAIN_WORDS
    t_data = time.time() - wall0
    train, test = data.waveforms("train"), data.waveforms("test")
    bank = speech.NoiseBank(data.waveforms("babble"))
    t0 = time.time()
    clean, _ = speech.train_speaker_encoder(train, bank, steps=steps, noise=False)
    noisy, _ = speech.train_speaker_encoder(train, bank, steps=steps, noise=True)
    kws, _ = speech.train_keyword_encoder(train[:, :n_train_words], steps=steps, n_way=min(8, n_train_words))
    kws_noisy, _ = speech.train_keyword_encoder(train[:, :n_train_words], steps=steps, n_way=min(8, n_train_words),
                                                noise=True, bank=bank)
    t_train = time.time() - t0
    models = {"mean+std log-mel": speech.mean_std_embedding,
              "ProtoNet (clean)": lambda f: speech.embed_all(clean, f),
              "ProtoNet (noise-aug.)": lambda f: speech.embed_all(noisy, f)}
    conds = [("white", math.inf)] + [(k, s) for k in ("white", "babble") for s in SNRS]
    results: dict = {"speaker": {}, "keyword": {}}
    shots = [1] if a.toy else [1, 5]
    for k in shots:
        sweep = speech.snr_sweep(models, test, bank, conds, 5, k, 5 if k == 1 else 3, episodes)
        results["speaker"][f"5-way {k}-shot"] = {
            ("clean" if math.isinf(s) else f"{kind} {s:g} dB"): {m: [acc.mean, acc.ci95] for m, acc in row.items()}
            for (kind, s), row in sweep.items()}
    kw_models = {"mean+std log-mel": speech.mean_std_embedding, "log-mel, time-aligned": lambda f: f.flatten(2),
                 "ProtoNet keywords (clean)": lambda f: speech.embed_all(kws, f),
                 "ProtoNet keywords (noise-aug.)": lambda f: speech.embed_all(kws_noisy, f)}
    kconds = [("white", math.inf), ("white", 10.0), ("babble", 10.0)]
    ksweep = speech.snr_sweep(kw_models, test[:, n_train_words:], bank, kconds, 5, 1, 3, episodes,
                              episode_fn=speech.keyword_episode)
    results["keyword"]["5-way 1-shot"] = {
        ("clean" if math.isinf(s) else f"{kind} {s:g} dB"): {m: [acc.mean, acc.ci95] for m, acc in row.items()}
        for (kind, s), row in ksweep.items()}
    wall, cpu = time.time() - wall0, time.process_time() - cpu0
    results["meta"] = {"wall_s": wall, "cpu_s": cpu, "data_s": t_data, "train_s": t_train, "steps": steps,
                       "episodes": episodes, "toy": a.toy, "threads": torch.get_num_threads(),
                       "train_speakers": len(data.split["train"]), "test_speakers": len(data.split["test"]),
                       "train_voices": data.voices("train"), "test_voices": data.voices("test"),
                       "babble_voices": data.voices("babble"), "words": data.words, "python": platform.python_version(),
                       "torch": torch.__version__}

    lines = ["# Few-shot speech on synthesised speakers (espeak-ng)", "",
             f"Command: `.venv/bin/python benchmarks/speech_fewshot.py --steps {a.steps} --episodes {a.episodes}"
             f"{' --toy' if a.toy else ''}`. {len(data.split['train'])} training speakers "
             f"({len(data.voices('train'))} voices), {len(data.split['test'])} held-out speakers of "
             f"{len(data.voices('test'))} voices never seen in training ({', '.join(data.voices('test'))}); babble "
             f"from {', '.join(data.voices('babble'))}. {steps} training episodes per model, {episodes} test "
             "episodes per cell (the same episodes for every model), mean ± 95% interval.", ""]
    for task, tables in results.items():
        if task == "meta":
            continue
        for setting, rows in tables.items():
            names = list(next(iter(rows.values())))
            title = ("Speaker identification, held-out speakers" if task == "speaker" else
                     "Keyword spotting: held-out words, held-out speakers, support and query speakers disjoint")
            lines += [f"## {title}, {setting}", "", "| condition | " + " | ".join(names) + " |",
                      "|---|" + "---|" * len(names)]
            for cond, row in rows.items():
                lines.append(f"| {cond} | " + " | ".join(f"{100 * m:.1f} ± {100 * c:.1f}" for m, c in row.values())
                             + " |")
            lines.append("")
    lines += [f"Wall {wall:.0f} s, CPU {cpu:.0f} s (corpus {t_data:.1f} s, training {t_train:.0f} s; one torch "
              f"thread; Python {platform.python_version()}, torch {torch.__version__}).", ""]
    md = "\n".join(lines)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "speech_fewshot.md").write_text(md)
    (a.out / "speech_fewshot.json").write_text(json.dumps(results, indent=1))
    print(md)
    return md


if __name__ == "__main__":
    main()
