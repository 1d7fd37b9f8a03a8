"""``distilkit audit`` and ``distilkit audits``: run and list the study's analyses."""

from __future__ import annotations

import click

from distilkit.cli import cli


@cli.command("audit")
@click.argument("set_path", metavar="SET")
@click.option("--source", help="Real data [the source recorded in the card].")
@click.option("--only", help="Comma-separated audit names [all].")
@click.option("--preset", default="cpu", show_default=True, help="smoke | cpu | paper.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--arg", "args", multiple=True, metavar="AUDIT.KEY=VALUE",
              help="Audit option, e.g. --arg mixing.seeds=3 --arg 'recognition.panel=[convnet]'.")
def audit_command(set_path, source, only, preset, seed, args) -> None:
    """Run the audits on SET; write audit/report.json, figures and the card's audit section."""
    from distilkit.audit import get_audit
    from distilkit.audit.report import REPORT_FILE, run_audits
    from distilkit.config import parse_key_values
    from distilkit.errors import DistilkitError
    from distilkit.runtime import make_accelerator

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    overrides: dict[str, dict] = {}
    for key, value in parse_key_values(args).items():
        if "." not in key:
            raise DistilkitError(f"--arg expects AUDIT.KEY=VALUE, got {key!r}")
        audit, option = key.split(".", 1)
        overrides.setdefault(audit, {})[option] = value
    for name in (names or []) + list(overrides):
        get_audit(name).resolve(preset, overrides.get(name))  # bad names/presets/options fail before any work
    accelerator = make_accelerator()
    report = run_audits(set_path, only=names, preset=preset, seed=seed, source=source, accelerator=accelerator,
                        overrides=overrides)
    if accelerator.is_main_process:
        for name, entry in report["audits"].items():
            if names is None or name in names:
                click.echo(f"[Q{entry['question']}] {name}: {entry['verdict']}")
        click.echo(f"report: {set_path}/{REPORT_FILE}; card section updated in {set_path}/README.md")


@cli.command("audits")
def audits_command() -> None:
    """List the registered audits with their question number."""
    from distilkit.audit import get_audit, list_audits

    for name in list_audits():
        spec = get_audit(name)
        click.echo(f"Q{spec.question}  {name:<14} {spec.summary}")
