"""``distilkit compare``: the study's overlays across several distilled sets of one source."""

from __future__ import annotations

import click

from distilkit.cli import cli
from distilkit.cli.options import preset_option


@cli.command("compare")
@click.argument("sets", nargs=-1, required=True, metavar="SET [SET ...]")
@click.option("--source", help="Real data [the source recorded in the first set's card].")
@preset_option("The audits' preset.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default="comparison", show_default=True, help="Folder for the figures, README.md and "
              "comparison.json.")
@click.option("--arg", "args", multiple=True, metavar="AUDIT.KEY=VALUE",
              help="Audit option, as for `distilkit audit` (mixing, agreement, early-recognition, curvature).")
@click.option("--push", "push", metavar="REPO_ID", help="Upload the comparison folder to this Hub dataset repo.")
@click.option("--token", help="Hub token [HF_TOKEN, else the huggingface_hub login].")
def compare_command(sets, source, preset, seed, out, args, push, token) -> None:
    """Compare distilled SETs (folders of one source): mixing curves, agreement distributions, the Hessian
    trace of every set along one shared real training run, early-recognition curves and a summary table.
    Each set's cached audits (audit/report.json with the same preset, seed and options) are reused; only
    missing ones run."""
    from distilkit.audit import get_audit
    from distilkit.compare import compare_sets, push_comparison
    from distilkit.config import parse_audit_overrides
    from distilkit.errors import DistilkitError
    from distilkit.hub.publish import check_repo_id
    from distilkit.runtime import make_accelerator

    overrides = parse_audit_overrides(args)
    for name in ("mixing", "agreement", "early-recognition", "curvature"):
        get_audit(name).resolve(preset, overrides.get(name))  # bad presets/options fail before any work
    unknown = sorted(set(overrides) - {"mixing", "agreement", "early-recognition", "curvature"})
    if unknown:
        raise DistilkitError(f"compare: --arg for audits it does not use: {', '.join(unknown)}")
    if push:
        check_repo_id(push)
    accelerator = make_accelerator()
    comparison = compare_sets(list(sets), out, source=source, preset=preset, seed=seed, accelerator=accelerator,
                              overrides=overrides)
    if not accelerator.is_main_process:
        return
    for row in comparison["rows"]:
        mixing = row["mixing_small_k"]["outcome"] if row["mixing_small_k"] else "-"
        agreement = row["agreement_test"]["outcome"] if row["agreement_test"] else "-"
        learned_early = row["early_recognition_test"]["outcome"] if row["early_recognition_test"] else "-"
        click.echo(f"{row['set']}: distilled only {row['distilled_only']:.3f}; small-k dip {mixing}; "
                   f"early > subset agreement {agreement}; learned early {learned_early}; "
                   f"curvature pattern {row['curvature_outcome']}")
    click.echo(f"comparison: {out}/README.md, {out}/comparison.json")
    if push:
        sha = push_comparison(out, push, token)
        click.echo(f"pushed the comparison to {push} (commit {sha[:10]})")
