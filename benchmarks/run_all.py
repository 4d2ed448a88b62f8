"""`make bench`: run every benchmark at its default (paper-scale) settings, then update the README.

Paper scale takes hours on a CPU; each script takes arguments for shorter runs (see its --help).
"""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["compare_all.py", "baselines.py", "metric_omniglot.py", "maml_speed.py", "maml_omniglot.py",
           "meta_lstm_omniglot.py", "reptile_omniglot.py", "leo_omniglot.py"]

for script in SCRIPTS:
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=False)
subprocess.run([sys.executable, str(HERE / "readme_results.py")], check=True)
