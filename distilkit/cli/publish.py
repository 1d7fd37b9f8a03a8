"""``distilkit publish``: push a set folder to a Hugging Face Hub dataset repo."""

from __future__ import annotations

import click

from distilkit.cli import cli


@cli.command("publish")
@click.argument("set_path", metavar="SET")
@click.argument("repo_id", metavar="REPO_ID")
@click.option("--config-name", default="default", show_default=True,
              help="Dataset config to publish as (several IPCs or methods can share a repo, e.g. ipc10).")
@click.option("--private", is_flag=True, help="Create the repo private (ignored if it exists).")
@click.option("--token", help="Hub token [HF_TOKEN, else the huggingface_hub login].")
@click.option("--revision", help="Branch to push to (created if missing) [main].")
def publish_command(set_path, repo_id, config_name, private, token, revision) -> None:
    """Push the set folder SET to dataset repo REPO_ID: data, merged card and artifacts."""
    from accelerate import PartialState

    from distilkit.hub.publish import publish_set

    if not PartialState().is_main_process:  # the main process alone talks to the Hub
        return
    published = publish_set(set_path, repo_id, config_name=config_name, private=private, token=token,
                            revision=revision)
    removed = f"; removed {len(published.deleted)} stale audit files" if published.deleted else ""
    click.echo(f"published {set_path} to {published.ref} ({len(published.files)} files; commits "
               f"{published.data_commit[:10]} data, {published.card_commit[:10]} card and artifacts{removed})")
    config = "" if published.config == "default" else f", {published.config!r}"
    branch = f", revision={revision!r}" if revision else ""
    click.echo(f"load it with: load_dataset({repo_id!r}{config}, split='train'{branch})")
