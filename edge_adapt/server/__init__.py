"""An OpenAI-compatible HTTP server over the library (``edge-adapt serve``; the [server] extra)."""

from edge_adapt.server.app import create_app
from edge_adapt.server.state import ServeConfig

__all__ = ["ServeConfig", "create_app"]
