"""An OpenAI-compatible HTTP server over the library (``edge-adapt serve``; the [server] extra)."""

from edge_adapt.server.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
