"""Run under ``torchrun --nproc_per_node 2`` by tests/test_multiprocess.py (not collected by pytest).

Distills each method named on the command line on the smoke preset into OUT/<method>, then
evaluates OUT/<first method> with 3 runs split across the processes; writes OUT/evaluation.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distilkit.config import DistillConfig
from distilkit.evaluate import evaluate_folder
from distilkit.pipeline import distill
from distilkit.runtime import make_accelerator


def main() -> None:
    out, methods = Path(sys.argv[1]), sys.argv[2].split(",")
    accelerator = make_accelerator()
    for method in methods:
        distill(DistillConfig(method=method, ipc=2, preset="smoke", out=str(out / method)), accelerator=accelerator)
    results = evaluate_folder(out / methods[0], runs=3, preset="smoke", accelerator=accelerator)
    if accelerator.is_main_process:
        (out / "evaluation.json").write_text(json.dumps({"processes": accelerator.num_processes,
                                                          "accuracies": results[0]["accuracies"]}))


if __name__ == "__main__":
    main()
