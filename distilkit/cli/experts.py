"""``distilkit experts``: train (or find) expert trajectories for trajectory matching, optionally share them."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from distilkit.cli import cli
from distilkit.cli.options import preset_option


@cli.command("experts")
@click.option("--source", default="embedded", show_default=True,
              help="'embedded', a local folder/parquet file, or a Hub dataset id.")
@click.option("--subset", help="Hub dataset configuration (subset) name.")
@click.option("--split", default="train", show_default=True, help="Train split of the source.")
@click.option("--drop-empty-classes", is_flag=True,
              help="Drop classes without train images (and remap labels) instead of refusing the source.")
@click.option("--pixel-space", type=click.Choice(["raw", "normalized", "zca"]),
              help="Pixel space (must match the mtt run that uses the experts) [mtt's for the data: zca on RGB, "
                   "else normalized].")
@preset_option("Model, number of experts and epochs (standard and paper: MTT's own recipe).")
@click.option("--model", help="Network [the preset's].")
@click.option("--num-experts", type=int, help="Number of experts [the preset's].")
@click.option("--epochs", type=int, help="Epochs per expert (parameters saved after each) [the preset's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (use the mtt run's seed to share).")
@click.option("--out", help="Copy the experts folder here [kept in $DISTILKIT_CACHE/experts/<key>].")
@click.option("--push", "push_repo", metavar="REPO_ID", help="Upload the experts to this Hub dataset repo.")
@click.option("--token", help="Hub token for --push [HF_TOKEN, else the huggingface_hub login].")
@click.option("--private", is_flag=True, help="Create the --push repo private.")
def experts_command(source, subset, split, drop_empty_classes, pixel_space, preset, model, num_experts, epochs, seed,
                    out, push_repo, token, private) -> None:
    """Train ConvNet experts on real data (SGD lr 0.01, no momentum, DSA), saving every epoch's parameters.

    Experts are keyed by the train split's content, the model and the training recipe: a second call
    finds them and trains nothing. `distilkit distill --method mtt` uses matching experts from the
    cache, or `--arg experts=DIR` / `--arg experts=hf://<repo_id>`.
    """
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.errors import DistilkitError
    from distilkit.experts import ensure_experts, expert_preset
    from distilkit.hub.experts import push_experts
    from distilkit.methods import get_method
    from distilkit.methods._registry import dataset_families
    from distilkit.outputs import check_output_folder
    from distilkit.runtime import make_accelerator

    cfg = expert_preset(preset, model=model, num_experts=num_experts, epochs=epochs, seed=seed)
    cfg.check()
    dest = Path(out) if out else None
    if dest is not None:  # before any training: a bad --out must cost nothing
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise DistilkitError(f"--out {dest} exists and is not " + ("a folder" if not dest.is_dir() else "empty"))
        check_output_folder(dest, "--out")
    accelerator = make_accelerator()
    with accelerator.main_process_first():
        source_cfg = SourceConfig(source=source, subset=subset, split=split, drop_empty_classes=drop_empty_classes)
        real = load_real(source_cfg, pixel_space or "normalized", seed)
        wanted = get_method("mtt").default_pixel_space(dataset_families(real))
        if pixel_space is None and wanted not in (None, real.pixel_space.kind):
            real = load_real(source_cfg, wanted, seed)
    experts = ensure_experts(real, cfg, accelerator)
    if not accelerator.is_main_process:
        return
    mean_acc = sum(e["test_accuracy"] for e in experts.index["experts"]) / experts.num_experts
    click.echo(f"experts {experts.index['key']}: {experts.num_experts} x {experts.model}, {experts.epochs} epochs, "
               f"mean test accuracy {mean_acc:.3f} ({experts.folder})")
    if dest is not None:
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise DistilkitError(f"--out {dest} exists and is not empty (it was filled while the experts trained); "
                                 f"they are kept in {experts.folder}")
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(experts.folder, tmp)
            if dest.exists():
                dest.rmdir()
            tmp.rename(dest)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DistilkitError(f"could not copy the experts to {dest} ({err.strerror or err}); they are kept in "
                                 f"{experts.folder}") from None
        click.echo(f"copied to {dest}")
    if push_repo:
        sha = push_experts(experts.folder, push_repo, token=token, private=private)
        click.echo(f"pushed to hf://datasets/{push_repo} (commit {sha[:10]}); use it with "
                   f"--arg experts=hf://{push_repo}")
