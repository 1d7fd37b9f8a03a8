"""``distilkit methods``: the registered methods and their defaults."""

from __future__ import annotations

import click
import yaml

from distilkit.cli import cli
from distilkit.cli.options import preset_option


@cli.command("methods")
@click.argument("name", required=False)
@preset_option("Show the defaults this preset resolves to.")
@click.option("--ipc", type=int, default=10, show_default=True, help="Show the defaults for this IPC.")
@click.option("--family", "families", multiple=True, type=click.Choice(["rgb", "grayscale", "digits"]),
              help="Dataset family to resolve for (repeatable, e.g. --family grayscale --family digits) [none: the "
                   "base defaults; distill picks it from the data].")
@click.option("--verbose", "-v", is_flag=True, help="Say where each default comes from.")
def methods_command(name, preset, ipc, families, verbose) -> None:
    """List distillation methods, or show NAME's resolved defaults for a preset, IPC and dataset family."""
    from distilkit.methods import get_method, list_methods
    from distilkit.methods._registry import DATASET_FAMILIES

    if name is None:
        for method in list_methods():
            spec = get_method(method)
            click.echo(f"{method:<10} {spec.family:<22} {spec.summary}")
        return
    spec = get_method(name)
    families = tuple(families)
    # an unknown preset or an IPC below 1 fails before any output
    resolved = spec.resolve(preset, ipc, families=families)
    click.echo(f"{name} ({spec.family}): {spec.summary}")
    if spec.citation:
        click.echo(f"cite: {spec.citation}")
    click.echo(f"defaults for --preset {preset} --ipc {ipc} (override with --arg KEY=VALUE):")
    if not verbose:
        click.echo(yaml.safe_dump(resolved, sort_keys=True).rstrip() or "  (none)")
        return
    for key in sorted(resolved):
        value = yaml.safe_dump({key: resolved[key]}, default_flow_style=True).strip()[1:-1]
        click.echo(f"{value:<40} # {spec.source_of(key, preset, ipc, families)}")
    space = spec.default_pixel_space(families)
    if space:
        click.echo(f"{'pixel space: ' + space:<40} # {spec.source_of('pixel_space', preset, ipc, families)}")
    tables = spec.family_tables(DATASET_FAMILIES)
    if tables:
        click.echo("per dataset family (distill picks the family from the data; see --family):")
        for family, table in tables:
            values = ", ".join(f"{k}={v}" for k, v in table.items())
            click.echo(f"  {family}: {values}")
