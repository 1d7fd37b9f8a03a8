"""``distilkit bench``: a reproducible results table over methods x IPC x seeds."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from distilkit.cli import cli
from distilkit.cli.options import preset_option


def _ints(value: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=flag) from None


@cli.command("bench")
@click.option("--source", default="embedded", show_default=True, help="Real data, as for `distilkit distill`.")
@click.option("--methods", default="random,dm", show_default=True, help="Comma-separated method names.")
@click.option("--ipc", "ipcs", default="1,10", show_default=True, help="Comma-separated images per class.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated distillation seeds.")
@preset_option("Distillation preset.")
@preset_option("Evaluation protocol [the distillation preset].", flag="--eval-preset", default=None)
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True, help="Evaluation runs per set.")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="Method option passed to every distill.")
@click.option("--launcher", default=None, help="Command that runs distilkit per cell, e.g. "
              "'accelerate launch --num_processes 8 -m distilkit' [python -m distilkit].")
@click.option("--out", default="bench", show_default=True, help="Folder for results.json, results.md, sets, logs.")
def bench_command(source, methods, ipcs, seeds, preset, eval_preset, runs, args, launcher, out) -> None:
    """Distill every (method, IPC, seed) cell, evaluate each set with one protocol, and write
    OUT/results.json and OUT/results.md (accuracy mean ± std, distill wall time, s/iteration, peak
    memory, and the published Fashion-MNIST number beside ours). Re-running resumes the grid."""
    from distilkit.bench import BenchGrid, run_bench
    from distilkit.config import parse_key_values

    parse_key_values(args)  # validates KEY=VALUE; the raw text is passed on to every distill
    grid = BenchGrid(source=source, methods=[m.strip() for m in methods.split(",") if m.strip()],
                     ipcs=_ints(ipcs, "--ipc"), seeds=_ints(seeds, "--seeds"), preset=preset,
                     eval_preset=eval_preset, runs=runs, method_args=dict(pair.split("=", 1) for pair in args))
    results = run_bench(grid, Path(out), shlex.split(launcher) if launcher else None)
    click.echo((Path(out) / "results.md").read_text())
    failed = [name for name, cell in results["cells"].items() if cell.get("status") != "done"]
    if failed:
        click.echo(f"error: {len(failed)} cell(s) failed ({', '.join(failed)}); see {out}/logs; "
                   "re-run the same command to retry them", err=True)
        raise SystemExit(1)
