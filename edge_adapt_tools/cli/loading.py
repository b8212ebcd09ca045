"""What the workstation commands share: loading a tool module with a clear error when the
``[export]`` extra is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from edge_adapt.errors import MissingDependencyError

EXPORT_HINT = (
    "this command needs the workstation tools: pip install 'edge-adapt[export]' "
    "(install torch first; the CPU build is `pip install torch==2.13.0`)"
)


def load_tool(module: str) -> ModuleType:
    """Import a module of ``edge_adapt_tools``, turning a missing torch/transformers/gguf into a clear error."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{EXPORT_HINT} ({exc.name or exc} is missing)") from exc
