"""Run every benchmark script in this folder, one after the other (by hand, not in CI).

Picks up every ``bench_*.py``: bench_loss.py (the one INFERNO loss against BCE, paper and
H->tautau problems, one and two threads, memory, pytorch_inferno: the targets of issue 16),
bench_likelihood.py (profile scans against pyhf, toys),
bench_loop.py (ModelWrapper vs a bare loop), bench_profile.py (batched profile-likelihood scan vs
a loop over points).
Run with ``OMP_NUM_THREADS=1`` for the small-tensor benchmarks.
"""
import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
failed = []
for script in sorted(here.glob("bench_*.py")):
    print(f"\n=== {script.name} ===", flush=True)
    if subprocess.call([sys.executable, str(script)]) != 0:
        failed.append(script.name)
sys.exit(f"failed: {failed}" if failed else 0)
