"""``distilkit import``: turn a distilled set made by another toolkit into a distilkit set folder."""

from __future__ import annotations

import click

from distilkit.cli import cli


def _floats(text: str | None) -> list[float] | None:
    from distilkit.errors import DistilkitError

    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise DistilkitError(f"expected comma-separated numbers, got {text!r}") from None


@cli.command("import")
@click.argument("path", metavar="PATH")
@click.option("--source", required=True, help="The real dataset the set was distilled from (classes, shape, "
              "test split): embedded, a Hub id or a local folder.")
@click.option("--pixel-space", type=click.Choice(["raw", "normalized", "zca"]),
              help="Space the file's tensors are in (required for tensor files; image folders are raw).")
@click.option("--mean", help="Per-channel mean of the normalisation, e.g. 0.4914,0.4822,0.4465 [the source's].")
@click.option("--std", help="Per-channel std of the normalisation [the source's].")
@click.option("--zca-from-source", is_flag=True, help="The tensors are ZCA-whitened with a matrix fitted on the "
              "normalised source train split (as MTT/KIP do): fit it here (implies --pixel-space zca).")
@click.option("--zca-eps", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="ZCA regulariser (kornia's default, as the reference code uses).")
@click.option("--labels", "labels_file", help="Label tensor file (.pt/.npz/.safetensors): [N] class ids or [N, K] "
              "soft labels; overrides labels in PATH.")
@click.option("--lr", type=float, help="Learned learning rate to store with the set [lr in the file, if any].")
@click.option("--method-name", help="Method name for the card [from the file, else 'imported'].")
@click.option("--experiment", type=click.IntRange(0), default=0, show_default=True,
              help="Which experiment of a DC-style res_*.pt file.")
@click.option("--out", help="Output folder [distilled/<source>-<method>-ipc<IPC>-imported].")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
def import_command(path, source, pixel_space, mean, std, zca_from_source, zca_eps, labels_file, lr, method_name,
                   experiment, out, overwrite) -> None:
    """Import the distilled set at PATH: a .pt file ({"data", "label"} dict, (images, labels) tuple, DC's
    res_*.pt), MTT's images_best.pt/labels_best.pt/lr_best.pt, .npz, .safetensors, or an image folder (one
    sub-folder per class) with optional soft labels. Tensor files are read with torch.load(weights_only=True)
    only. Writes a set folder that evaluate, audit and publish take."""
    from distilkit.importers import default_import_out, import_set
    from distilkit.outputs import check_output_folder, check_replaceable

    if out:  # before any file is read: a bad --out costs nothing, and --overwrite never replaces an input
        check_output_folder(out, "--out")
        if overwrite:
            check_replaceable(out, protected=[p for p in (path, source, labels_file) if p])
    dset = import_set(path, source, pixel_space=pixel_space, mean=_floats(mean), std=_floats(std),
                      zca_from_source=zca_from_source, zca_eps=zca_eps, labels_file=labels_file, lr=lr,
                      method_name=method_name, experiment=experiment)
    out = out or default_import_out(dset)
    if overwrite:
        check_replaceable(out, protected=[p for p in (path, source, labels_file) if p])
    folder = dset.save(out, overwrite=overwrite)
    info = dset.provenance["imported"]
    click.echo(f"imported {info['format']} {info['file']} (sha256 {info['sha256'][:12]}): {dset.images.shape[0]} "
               f"images, IPC {dset.ipc}, {info['labels']} labels, pixel space {dset.pixel_space.kind}"
               + (f", learned lr {dset.learned_lr}" if dset.learned_lr else ""))
    click.echo(f"saved to {folder}")
