"""``distilkit evaluate``: train fresh models on a distilled set, report real test accuracy."""

from __future__ import annotations

import click

from distilkit.cli import cli


@cli.command("evaluate")
@click.argument("set_path", metavar="SET")
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True, help="Fresh models per architecture.")
@click.option("--preset", default="cpu", show_default=True, help="Training protocol: standard | paper | cpu | smoke.")
@click.option("--models", help="Comma-separated architectures, e.g. convnet,timm/resnet18 [the preset's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--source", help="Real data to test on [the source recorded in the card].")
@click.option("--labels", type=click.Choice(["hard", "soft"]),
              help="Train on the set's hard labels or its soft labels (if it has them) [the preset's: paper hard, "
                   "else soft].")
@click.option("--learned-lr/--no-learned-lr", "learned_lr", default=None,
              help="Train with the set's learned learning rate, if it has one [the preset's: paper no, else yes].")
@click.option("--token", help="Hub token for private repos [HF_TOKEN, else the huggingface_hub login].")
def evaluate_command(set_path, runs, preset, models, seed, source, labels, learned_lr, token) -> None:
    """Train RUNS fresh models on SET, test them on the real test split, write mean ± std into the card.
    SET may be a Hub repo id: its results are printed, not written (publish a folder to update a card)."""
    from distilkit.evaluate import evaluate_folder
    from distilkit.hub.repo import open_set
    from distilkit.runtime import make_accelerator
    from distilkit.train import train_preset

    train_preset(preset)  # validates the name before any work
    accelerator = make_accelerator()
    with open_set(set_path, token, accelerator) as opened:
        results = evaluate_folder(opened.folder, runs=runs, preset=preset, seed=seed, source=source,
                                  models=[m.strip() for m in models.split(",")] if models else None,
                                  accelerator=accelerator, labels=labels, learned_lr=learned_lr)
    if accelerator.is_main_process:
        for r in results:
            click.echo(f"{r['model']:<24} {r['preset']:<9} {100 * r['mean']:6.2f} ± {100 * r['std']:.2f} %"
                       f"  ({r['runs']} runs; {r['labels']} labels, lr {r['lr']:.4g})")
        click.echo(f"results written to {set_path}/README.md" if not opened.is_hub else
                   f"results not written: {opened.hub} is a Hub repo")
