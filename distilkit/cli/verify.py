"""``distilkit verify``: re-run the evaluation a card claims and check the claimed accuracy."""

from __future__ import annotations

import click

from distilkit.cli import cli


@cli.command("verify")
@click.argument("set_path", metavar="SET")
@click.option("--token", help="Hub token for private repos [HF_TOKEN, else the huggingface_hub login].")
@click.option("--source", help="Real data to test on [the source recorded in the card].")
def verify_command(set_path, token, source) -> None:
    """Re-run the evaluations claimed in SET's card (a repo id or a folder) and compare. Exit status 0
    when every claim holds, 1 when one does not."""
    from distilkit.distilled import DistilledSet
    from distilkit.hub.repo import open_set
    from distilkit.hub.verify import verdict_table, verify_set
    from distilkit.runtime import make_accelerator

    accelerator = make_accelerator()
    with open_set(set_path, token, accelerator) as opened:
        verdicts = verify_set(DistilledSet.load(opened.folder), accelerator=accelerator, source=source)
    if accelerator.is_main_process:
        click.echo(verdict_table(verdicts))
        failed = [v for v in verdicts if not v.holds]
        click.echo(f"{set_path}: " + ("every claim holds" if not failed else
                                      f"{len(failed)} of {len(verdicts)} claims do not hold"))
    if any(not v.holds for v in verdicts):
        click.get_current_context().exit(1)
