"""Shared rich consoles: results on stdout, progress and errors on stderr."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def human_bytes(n: float) -> str:
    unit = "B"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
