"""``distilkit experts``: train (or find) expert trajectories for trajectory matching, optionally share them."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from distilkit.cli import cli


@cli.command("experts")
@click.option("--source", default="embedded", show_default=True,
              help="'embedded', a local folder/parquet file, or a Hub dataset id.")
@click.option("--subset", help="Hub dataset configuration (subset) name.")
@click.option("--split", default="train", show_default=True, help="Train split of the source.")
@click.option("--pixel-space", type=click.Choice(["raw", "normalized", "zca"]),
              help="Pixel space (must match the mtt run that uses the experts) [mtt's for the data: zca on RGB, "
                   "else normalized].")
@click.option("--preset", default="cpu", show_default=True, help="standard | cpu | smoke (model, experts, epochs).")
@click.option("--model", help="Network [the preset's].")
@click.option("--num-experts", type=int, help="Number of experts [the preset's].")
@click.option("--epochs", type=int, help="Epochs per expert (parameters saved after each) [the preset's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (use the mtt run's seed to share).")
@click.option("--out", help="Copy the experts folder here [kept in $DISTILKIT_CACHE/experts/<key>].")
@click.option("--push", "push_repo", metavar="REPO_ID", help="Upload the experts to this Hub dataset repo.")
@click.option("--token", help="Hub token for --push [HF_TOKEN, else the huggingface_hub login].")
@click.option("--private", is_flag=True, help="Create the --push repo private.")
def experts_command(source, subset, split, pixel_space, preset, model, num_experts, epochs, seed, out, push_repo,
                    token, private) -> None:
    """Train ConvNet experts on real data (SGD lr 0.01, no momentum, DSA), saving every epoch's parameters.

    Experts are keyed by the train split's content, the model and the training recipe: a second call
    finds them and trains nothing. `distilkit distill --method mtt` uses matching experts from the
    cache, or `--arg experts=DIR` / `--arg experts=hf://<repo_id>`.
    """
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.errors import DistilkitError
    from distilkit.experts import ensure_experts, expert_preset, push_experts
    from distilkit.methods import get_method
    from distilkit.methods.registry import dataset_families
    from distilkit.runtime import make_accelerator

    cfg = expert_preset(preset, model=model, num_experts=num_experts, epochs=epochs, seed=seed)
    cfg.check()
    accelerator = make_accelerator()
    with accelerator.main_process_first():
        real = load_real(SourceConfig(source=source, subset=subset, split=split), pixel_space or "normalized", seed)
        wanted = get_method("mtt").default_pixel_space(dataset_families(real))
        if pixel_space is None and wanted not in (None, real.pixel_space.kind):
            real = load_real(SourceConfig(source=source, subset=subset, split=split), wanted, seed)
    experts = ensure_experts(real, cfg, accelerator)
    if not accelerator.is_main_process:
        return
    mean_acc = sum(e["test_accuracy"] for e in experts.index["experts"]) / experts.num_experts
    click.echo(f"experts {experts.index['key']}: {experts.num_experts} x {experts.model}, {experts.epochs} epochs, "
               f"mean test accuracy {mean_acc:.3f} ({experts.folder})")
    if out:
        dest = Path(out)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise DistilkitError(f"--out {dest} exists and is not empty")
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(experts.folder, tmp)
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
        click.echo(f"copied to {dest}")
    if push_repo:
        sha = push_experts(experts.folder, push_repo, token=token, private=private)
        click.echo(f"pushed to hf://datasets/{push_repo} (commit {sha[:10]}); use it with "
                   f"--arg experts=hf://{push_repo}")
