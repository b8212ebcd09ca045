"""The ``edge-adapt`` command: a thin layer over the library.

Exit codes: 0 success, 1 a runtime failure the message explains (bad model file, failed
verification...), 2 a usage error (unknown option, missing path), as click reports them.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import click
from rich.logging import RichHandler
from rich.markup import escape

from edge_adapt import __version__
from edge_adapt.cli.battery_cmd import battery_cmd
from edge_adapt.cli.bench_cmd import bench, report
from edge_adapt.cli.calibrate_cmd import calibrate_cmd
from edge_adapt.cli.console import err_console
from edge_adapt.cli.energy_cmd import energy_group
from edge_adapt.cli.info_cmd import info
from edge_adapt.cli.serve_cmd import serve_cmd
from edge_adapt.cli.solve_cmd import solve_cmd
from edge_adapt.errors import EdgeAdaptError

log = logging.getLogger(__name__)
COMMAND_ENTRY_POINTS = "edge_adapt.commands"


class _Group(click.Group):
    """The error boundary: the project's errors, and any OS or decoding error, become one line that
    says what went wrong (exit 1) instead of a traceback; ``-vv`` shows the traceback as well."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except EdgeAdaptError as exc:
            _fail(ctx, str(exc))
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(ctx, f"{where}{exc.strerror or exc}; check the path and its permissions")
        except UnicodeError as exc:
            _fail(ctx, f"a file is not UTF-8 text ({exc}); pass the text file the option asks for")
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug: still one line, and the way to see more
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback, and please report it)")


def _fail(ctx: click.Context, message: str) -> None:
    if ctx.params.get("verbose", 0) >= 2:
        log.exception("traceback")
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # one line, also in logs
    sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-adapt")
@click.option("-v", "--verbose", count=True, help="-v: progress details; -vv: also llama.cpp's own log.")
def main(verbose: int) -> None:
    """Adaptive test-time search for small quantized models, on the device they run on.

    \b
    Examples:
      edge-adapt solve "(454+762)*3"
      edge-adapt solve "(3348*6+7430)*2" --energy 5 --latency 2
      edge-adapt bench -o runs/default --limit 60
      edge-adapt report runs/default
      edge-adapt energy meters
      edge-adapt serve --port 8000
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
main.add_command(calibrate_cmd)
main.add_command(battery_cmd)
main.add_command(energy_group)
main.add_command(serve_cmd)


def _add_installed_commands(group: click.Group) -> None:
    """Commands other packages register under the ``edge_adapt.commands`` entry point (the
    workstation's ``export`` group): the device CLI knows them without importing them itself."""
    for entry in entry_points(group=COMMAND_ENTRY_POINTS):
        try:
            command = entry.load()
        except ImportError as exc:  # a plugin whose own dependencies are missing
            log.debug("command %r not available: %s", entry.name, exc)
            continue
        group.add_command(command, name=entry.name)


_add_installed_commands(main)
