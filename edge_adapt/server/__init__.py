"""An OpenAI-compatible HTTP server over the library (``edge-adapt serve``; the [server] extra)."""

from edge_adapt.server.app import create_app
from edge_adapt.server.jobs import Offer
from edge_adapt.server.state import ServeConfig

__all__ = ["Offer", "ServeConfig", "create_app"]
