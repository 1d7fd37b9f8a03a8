"""``distilkit info``: what a distilled set is, from its card."""

from __future__ import annotations

import click

from distilkit import jsonio
from distilkit.cli import cli


@cli.command("info")
@click.argument("set_path", metavar="SET")
@click.option("--json", "as_json", is_flag=True, help="Print the card's distilkit metadata as JSON.")
@click.option("--token", help="Hub token for private repos [HF_TOKEN, else the huggingface_hub login].")
def info_command(set_path, as_json, token) -> None:
    """Describe a distilled set (a folder or a Hub repo id): method, size, pixel space, provenance and
    evaluation results."""
    from distilkit.card import evaluation_markdown
    from distilkit.distilled import DistilledSet
    from distilkit.hub.repo import open_set

    with open_set(set_path, token) as opened:
        dset = DistilledSet.load(opened.folder)
    meta = dset.card_metadata()
    if as_json:
        click.echo(jsonio.dumps(meta, indent=2, default=str))
        return
    n, c, h, w = dset.images.shape
    source = dset.source
    lines = [
        f"set:          {set_path}",
        f"method:       {dset.method} (IPC {dset.ipc}, {n} images, {dset.num_classes} classes)",
        f"images:       float32 [{n}, {c}, {h}, {w}], pixel space {dset.pixel_space.kind}, "
        f"values {dset.images.min():.3f} .. {dset.images.max():.3f}",
        f"labels:       {'soft + hard' if dset.soft_labels is not None else 'hard'}"
        + (f", learned lr {dset.learned_lr:.5g}" if dset.learned_lr else ""),
        f"source:       {source.get('id')} split {source.get('split')} ({source.get('num_train')} train, "
        f"test: {source.get('test', {}).get('split')}), licence {source.get('license')}",
        _made(dset.provenance),
        "evaluation:",
        evaluation_markdown(dset.evaluation),
    ]
    audits = dset.card_extra.get("audits") or {}
    if audits:
        lines.append("audits: " + ", ".join(f"{name} (Q{a.get('question')}, {a.get('preset')})"
                                            for name, a in audits.items()) + " — see audit/report.json")
    click.echo("\n".join(lines))


def _made(provenance: dict) -> str:
    imported = provenance.get("imported")
    if isinstance(imported, dict):
        return (f"made:         imported ({imported.get('format')} {imported.get('file')}, sha256 "
                f"{str(imported.get('sha256'))[:16]}...), distilkit {provenance.get('distilkit_version')}")
    return (f"made:         seed {provenance.get('seed')}, preset {provenance.get('preset')}, "
            f"{provenance.get('wall_time_s')} s on {provenance.get('hardware')}, "
            f"distilkit {provenance.get('distilkit_version')}")
