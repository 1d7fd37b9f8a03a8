"""The ``distilkit`` command line: one module per command, each thin over the library."""

from __future__ import annotations

import click

from distilkit.errors import DistilkitError


class DistilkitGroup(click.Group):
    """Turns user-facing errors into one line on stderr and exit status 2 (never a traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DistilkitError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)


@click.group(cls=DistilkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="distilkit")
def cli() -> None:
    """Distill image-classification datasets into tiny synthetic sets, evaluate them and share them
    on the Hugging Face Hub.

    \b
    Quick start (embedded Fashion-MNIST subset, distribution matching, IPC 10, minutes on a CPU):
      distilkit distill
      distilkit evaluate distilled/fashion-mnist-dm-ipc10 --runs 5
      distilkit info distilled/fashion-mnist-dm-ipc10
    """


def main() -> None:
    import distilkit.cli.import_  # noqa: F401  (register)
    from distilkit.cli import audit, bench, distill, evaluate, experts, info, methods, publish, verify  # noqa: F401  (register)

    cli()
