"""How many CPU threads should the course use? (the COURSE_THREADS default)

Times 60 Conv-4 training steps (batch 80, 28x28) with 1 and with 2 torch threads, on an idle
machine and beside 1 and 2 busy threads of another process (a matmul loop, standing in for a
browser, a second notebook or a build). Prints wall and CPU seconds; writes benchmarks/out/threads.md.

    .venv/bin/python benchmarks/threads.py
"""
from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "threads.md"

WORK = """
import time, torch, sys
from course_utils import nets
torch.set_num_threads({threads})
torch.manual_seed(0)
net = nets.conv4_classifier(5, hidden=32)
opt = torch.optim.Adam(net.parameters())
x = torch.randn(80, 1, 28, 28); y = torch.randint(0, 5, (80,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
for _ in range(5):
    step()
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(60):
    step()
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def _hog(threads: int, seconds: float) -> None:
    import torch
    torch.set_num_threads(threads)
    a = torch.randn(1500, 1500)
    t0 = time.time()
    while time.time() - t0 < seconds:
        a = (a @ a).tanh()


def measure(threads: int) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", WORK.format(threads=threads)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    rows = []
    for load in (0, 1, 2):
        hog = None
        if load:
            hog = mp.get_context("spawn").Process(target=_hog, args=(load, 600))
            hog.start()
            time.sleep(2)
        try:
            for threads in (1, 2):
                wall, cpu = measure(threads)
                rows.append((load, threads, wall, cpu))
                print(f"other busy threads {load}, torch threads {threads}: wall {wall:.2f} s, cpu {cpu:.2f} s",
                      flush=True)
        finally:
            if hog is not None:
                hog.terminate()
                hog.join()
    lines = ["# Torch threads on this machine (benchmarks/threads.py)", "",
             "60 Conv-4 training steps (batch 80, 28x28 images), beside 0, 1 or 2 busy threads of another process.",
             "", "| other busy threads | torch threads | wall s | CPU s |", "|---|---|---|---|"]
    lines += [f"| {l} | {t} | {w:.2f} | {c:.2f} |" for l, t, w, c in rows]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
