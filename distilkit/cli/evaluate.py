"""``distilkit evaluate``: train fresh models on a distilled set, report real test accuracy."""

from __future__ import annotations

import click

from distilkit.cli import cli
from distilkit.cli.options import preset_option


@cli.command("evaluate")
@click.argument("set_path", metavar="SET")
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True, help="Fresh models per architecture.")
@preset_option("Training protocol.")
@click.option("--models", help="Comma-separated architectures, e.g. convnet,timm/resnet18, or 'cross' (the preset's "
              "ConvNet, its batch-norm variant, timm/resnet18, vgg11, alexnet) [the preset's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--source", help="Real data to test on [the source recorded in the card].")
@click.option("--labels", type=click.Choice(["hard", "soft"]),
              help="Train on the set's hard labels or its soft labels (if it has them) [the preset's: paper hard, "
                   "else soft].")
@click.option("--learned-lr/--no-learned-lr", "learned_lr", default=None,
              help="Train with the set's learned learning rate, if it has one [the preset's: paper no, else yes].")
@click.option("--token", help="Hub token for private repos [HF_TOKEN, else the huggingface_hub login].")
@click.option("--scores", is_flag=True, help="Also the fair scores IOR, HLR, LRS, ARS (random real subset, full real "
              "data (cached), with/without augmentation; no selection on test).")
def evaluate_command(set_path, runs, preset, models, seed, source, labels, learned_lr, token, scores) -> None:
    """Train RUNS fresh models on SET, test them on the real test split, write mean ± std into the card.
    SET may be a Hub repo id: its results are printed, not written (publish a folder to update a card)."""
    from distilkit.evaluate import evaluate_folder
    from distilkit.hub.repo import open_set
    from distilkit.models import parse_model_list
    from distilkit.runtime import make_accelerator
    from distilkit.train import train_preset

    train_preset(preset)  # validates the name before any work
    # empty or unknown names fail here, before any work
    model_names = parse_model_list(models, allow_cross=True) if models is not None else None
    accelerator = make_accelerator()
    with open_set(set_path, token, accelerator) as opened:
        results = evaluate_folder(opened.folder, runs=runs, preset=preset, seed=seed, source=source,
                                  models=model_names, accelerator=accelerator, labels=labels,
                                  learned_lr=learned_lr, scores=scores)
    if accelerator.is_main_process:
        for r in results:
            click.echo(f"{r['model']:<24} {r['preset']:<9} {100 * r['mean']:6.2f} ± {100 * r['std']:.2f} %"
                       f"  ({r['runs']} runs; {r['labels']} labels, lr {r['lr']:.4g})")
            if "scores" in r:
                sc = r["scores"]
                signs = {"ior": "+", "hlr": "+"}  # differences of accuracies; LRS and ARS lie in [0, 1]
                click.echo("    " + "  ".join(f"{k.upper()} {100 * sc[k]['mean']:{signs.get(k, '')}.2f} ± "
                                              f"{100 * sc[k]['std']:.2f}" for k in ("ior", "hlr", "lrs", "ars"))
                           + f"  (random {100 * sc['accuracies']['random']:.2f} %, "
                             f"full real {100 * sc['accuracies']['full_real']:.2f} %)")
        if len(results) > 1:
            click.echo(f"{'mean of ' + str(len(results)) + ' models':<24} {results[0]['preset']:<9} "
                       f"{100 * sum(r['mean'] for r in results) / len(results):6.2f} %")
        click.echo(f"results written to {set_path}/README.md" if not opened.is_hub else
                   f"results not written: {opened.hub} is a Hub repo")
