"""The ``edge-adapt`` command: a thin layer over the library.

Exit codes: 0 success, 1 a runtime failure the message explains (bad model file, failed
verification...), 2 a usage error (unknown option, missing path), as click reports them.
"""

from __future__ import annotations

import logging
import sys

import click
from rich.logging import RichHandler

from edge_adapt import __version__
from edge_adapt.cli.bench_cmd import bench, report
from edge_adapt.cli.console import err_console
from edge_adapt.cli.energy_cmd import energy_group
from edge_adapt.cli.export_cmd import export_group
from edge_adapt.cli.info_cmd import info
from edge_adapt.cli.solve_cmd import solve_cmd
from edge_adapt.errors import EdgeAdaptError


class _Group(click.Group):
    """Turns the project's errors into one readable line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except EdgeAdaptError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-adapt")
@click.option("-v", "--verbose", count=True, help="-v: progress details; -vv: also llama.cpp's own log.")
def main(verbose: int) -> None:
    """Adaptive test-time search for small quantized models, on the device they run on.

    \b
    Examples:
      edge-adapt solve "454+762*3"
      edge-adapt solve "3348*6+7430*2" --energy 5 --latency 2
      edge-adapt bench -o runs/default --limit 60
      edge-adapt report runs/default
      edge-adapt energy meters
      edge-adapt info
      edge-adapt export gguf ./my-hf-model -o ./gguf -q Q4_K_M -q Q8_0
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)])
    if verbose < 2:
        logging.getLogger("edge_adapt.llama").setLevel(logging.WARNING)


main.add_command(info)
main.add_command(solve_cmd, name="solve")
main.add_command(bench)
main.add_command(report)
main.add_command(energy_group)
main.add_command(export_group)
