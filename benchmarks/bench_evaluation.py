"""Time a whole binary evaluation: 1,000 cases × 1,000 patient-bootstrap resamples.

Every binary metric with its interval, DeLong's AUROC interval, curves with bootstrap bands and
subgroups over four attributes (sex, age band, site, manufacturer), for one set of 1,000 cases
(~570 patients: many have two or more cases); then, separately, writing the report and figures.
Goal: the evaluation ≤ 30 s on the 2-core machine. Prints one line per repeat and a summary.

Usage: ``python benchmarks/bench_evaluation.py [--cases 1000] [--resamples 1000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import numpy as np
import pandas as pd

from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.outputs import write_set_outputs
from medimg.evaluation.sets import evaluate_sets


def make_table(n: int, seed: int, prefix: str) -> pd.DataFrame:
    """Synthetic binary per-case table with patients, attributes and a manufacturer effect."""
    rng = np.random.default_rng(seed)
    patient = rng.integers(0, int(n * 0.8), n)
    y = (rng.random(n) < 0.3).astype(int)
    manufacturer = rng.choice(["Acme", "Synth"], n)
    score = rng.normal(0, 1, n) + (2.0 - 0.7 * (manufacturer == "Acme")) * y
    return pd.DataFrame(
        {
            "case_id": [f"{prefix}{i:05d}" for i in range(n)],
            "patient_id": [f"{prefix}p{k:05d}" for k in patient],
            "label": y,
            "prob": 1 / (1 + np.exp(-score)),
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(20, 90, n),
            "site": rng.choice(["A", "B", "C"], n),
            "manufacturer": manufacturer,
        }
    )


def main() -> None:
    """Run the benchmark and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    test, val = make_table(args.cases, 1, "t"), make_table(300, 2, "v")
    cfg = EvaluationConfig(n_resamples=args.resamples)
    evaluate_sets("classification", {"test": test.iloc[:100]}, val, config=cfg)  # warm-up
    evals, writes = [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        results = evaluate_sets("classification", {"test": test}, val, config=cfg)
        evals.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_set_outputs(tmp, results)
            writes.append(time.perf_counter() - start)
        print(f"repeat {repeat}: evaluate {evals[-1]:.2f} s, report + figures {writes[-1]:.2f} s")
    print(
        f"{platform.machine()}, {platform.python_version()}, numpy {np.__version__}; "
        f"{args.cases} cases, {test['patient_id'].nunique()} patients, {args.resamples} resamples: "
        f"evaluate median {statistics.median(evals):.2f} s (min {min(evals):.2f}), "
        f"report median {statistics.median(writes):.2f} s"
    )


if __name__ == "__main__":
    main()
