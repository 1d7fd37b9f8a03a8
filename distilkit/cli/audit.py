"""``distilkit audit`` and ``distilkit audits``: run and list the study's analyses."""

from __future__ import annotations

import click

from distilkit.cli import cli
from distilkit.cli.options import preset_option


@cli.command("audit")
@click.argument("set_path", metavar="SET")
@click.option("--source", help="Real data [the source recorded in the card].")
@click.option("--only", help="Comma-separated audit names [all].")
@preset_option("How long the audits run: the study's protocols (standard, paper), sized for two CPU cores (cpu) "
               "or for tests (smoke).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--arg", "args", multiple=True, metavar="AUDIT.KEY=VALUE",
              help="Audit option, e.g. --arg mixing.seeds=3 --arg 'recognition.panel=[convnet]'.")
@click.option("--labels", type=click.Choice(["hard", "soft"]),
              help="Every audit trains on the set's hard labels or its soft labels (if it has them) [hard, the "
                   "study's protocol].")
@click.option("--learned-lr/--no-learned-lr", "learned_lr", default=None,
              help="Every audit trains on the set with its learned learning rate, if it has one [no: lr 0.01].")
@click.option("--push", is_flag=True, help="SET is a Hub repo: commit the card and audit files back to it.")
@click.option("--token", help="Hub token [HF_TOKEN, else the huggingface_hub login].")
def audit_command(set_path, source, only, preset, seed, args, labels, learned_lr, push, token) -> None:
    """Run the audits on SET (a folder or a Hub repo id); write audit/report.json, figures and the card's
    audit section (into the folder, or with --push into the repo)."""
    from distilkit.audit._report import REPORT_FILE, plan_audits, run_audits
    from distilkit.config import parse_audit_overrides
    from distilkit.errors import DistilkitError
    from distilkit.hub.repo import open_set, parse_set_ref
    from distilkit.runtime import make_accelerator

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    overrides = parse_audit_overrides(args)
    plan_audits(names, preset, seed, overrides, labels, learned_lr)  # bad names/presets/options fail before any work
    if push and parse_set_ref(set_path) is None:
        raise DistilkitError(f"--push needs a Hub repo id as SET; {set_path} is a local folder (use publish)")
    accelerator = make_accelerator()
    with open_set(set_path, token, accelerator) as opened:
        report = run_audits(opened.folder, only=names, preset=preset, seed=seed, source=source,
                            accelerator=accelerator, overrides=overrides, labels=labels, learned_lr=learned_lr)
        if accelerator.is_main_process:
            for name, entry in report["audits"].items():
                if names is None or name in names:
                    click.echo(f"[Q{entry['question']}] {name}: {entry['verdict']}")
            if push:
                from distilkit.audit._report import audit_markdown, card_audit_entries
                from distilkit.hub.publish import push_audit

                sha = push_audit(opened.folder, opened.hub, opened.commit, token, ran=names or list(report["audits"]),
                                 render=lambda merged: (card_audit_entries(merged), audit_markdown(merged)))
                click.echo(f"pushed the audit to {opened.hub} (commit {sha[:10]})")
            elif opened.is_hub:
                click.echo(f"report not kept: {opened.hub} is a Hub repo; pass --push to commit it there")
            else:
                click.echo(f"report: {set_path}/{REPORT_FILE}; card section updated in {set_path}/README.md")


@cli.command("audits")
def audits_command() -> None:
    """List the registered audits with their question number."""
    from distilkit.audit import get_audit, list_audits

    for name in list_audits():
        spec = get_audit(name)
        click.echo(f"Q{spec.question}  {name:<18} {spec.summary}")
