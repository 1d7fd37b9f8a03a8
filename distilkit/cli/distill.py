"""``distilkit distill``: real dataset -> distilled set folder."""

from __future__ import annotations

import click

from distilkit.cli import cli
from distilkit.cli.options import preset_option


@cli.command("distill")
@click.option("--source", help="'embedded' (default), a local folder/parquet file, or a Hub dataset id.")
@click.option("--subset", help="Hub dataset configuration (subset) name.")
@click.option("--split", help="Train split of the source [train].")
@click.option("--test-split", help="Test split [test if present, else a seeded 10% hold-out of train].")
@click.option("--revision", help="Hub revision (branch, tag or commit) of the source.")
@click.option("--image-column", help="Image column [detected].")
@click.option("--label-column", help="Label column [detected].")
@click.option("--image-size", type=int, help="Resize images to this square size [as stored].")
@click.option("--drop-empty-classes", is_flag=True, default=None,
              help="Drop classes without train images (and remap labels) instead of refusing the source.")
@click.option("--method", help="Distillation method (see `distilkit methods`) [dm].")
@click.option("--ipc", type=int, help="Images per class [10].")
@preset_option("How big the run is [cpu].", default=None)
@click.option("--seed", type=int, help="Random seed [0].")
@click.option("--pixel-space", type=click.Choice(["raw", "normalized", "zca"]),
              help="[the method's for the dataset: zca for mtt on RGB data, else normalized].")
@click.option("--out", help="Output folder [distilled/<source>-<method>-ipc<ipc>].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML run config; flags win.")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="Method option, e.g. --arg iterations=200.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint of an interrupted run.")
@click.option("--overwrite", is_flag=True,
              help="Replace the output folder if it is a distilled set (never another folder, a file or the source).")
def distill_command(config_file, args, resume, overwrite, **flags) -> None:
    """Distill a real dataset into a small synthetic set (a Hub-layout folder with a dataset card)."""
    from distilkit.config import parse_key_values, resolve_distill_config
    from distilkit.pipeline import distill
    from distilkit.runtime import make_accelerator

    cfg = resolve_distill_config(config_file, method_args=parse_key_values(args) or None, **flags)
    accelerator = make_accelerator()
    out = distill(cfg, accelerator=accelerator, resume=resume, overwrite=overwrite)
    if accelerator.is_main_process:
        click.echo(f"wrote {out}")
        click.echo(f"next: distilkit evaluate {out} --runs 5")
