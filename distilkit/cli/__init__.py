"""The ``distilkit`` command line: one module per command, each thin over the library."""

from __future__ import annotations

import click

from distilkit.errors import DistilkitError

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


class DistilkitGroup(click.Group):
    """Turns user-facing errors into one line on stderr and exit status 2 (never a traceback): ours,
    and click's own usage errors (a bad option value, an unknown option or command), which click would
    print as a usage block. Ctrl-C (SIGINT) ends with one line and status 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DistilkitError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except click.UsageError as err:
            command = f"distilkit {err.ctx.info_name}" if err.ctx is not None and err.ctx is not ctx else "distilkit"
            click.echo(f"error: {' '.join(err.format_message().split())} (see {command} --help)", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(INTERRUPTED)


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
    from distilkit.runtime import configure_process

    configure_process()  # the process-wide settings (CPU mode, allocator, Hub timeouts): here, never in the library


def main() -> None:
    try:
        from distilkit.cli import (  # noqa: F401  (register)
            audit,
            bench,
            compare,
            distill,
            evaluate,
            experts,
            import_,
            info,
            methods,
            publish,
            verify,
        )
    except KeyboardInterrupt:  # interrupted while importing (torch takes a while): no traceback either
        click.echo("error: interrupted", err=True)
        raise SystemExit(INTERRUPTED) from None
    cli()
