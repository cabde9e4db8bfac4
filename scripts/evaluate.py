"""Evaluate a run or an exported model on a manifest: `python scripts/evaluate.py run_dir=... manifest=...`."""

from medimg.pipeline.entry import evaluate_main

if __name__ == "__main__":
    evaluate_main()
