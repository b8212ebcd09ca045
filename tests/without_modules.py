"""Running the CLI in a fresh interpreter where some packages cannot be imported, as on a
machine without an optional extra."""

from __future__ import annotations

import subprocess
import sys

_BLOCKER = (
    "import sys, importlib.abc\n"
    "BLOCKED = {blocked!r}\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] in BLOCKED:\n"
    "            raise ImportError(f'No module named {{name!r}}', name=name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "from edge_adapt.cli import main\n"
    "sys.argv = ['edge-adapt'] + sys.argv[1:]\n"
    "main()\n"
)


def run_cli_without(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """``edge-adapt ARGS`` with the top-level packages ``blocked`` made unimportable."""
    return subprocess.run([sys.executable, "-c", _BLOCKER.format(blocked=set(blocked)), *args], capture_output=True, text=True)
