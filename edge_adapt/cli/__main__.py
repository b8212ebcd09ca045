"""``python -m edge_adapt.cli``: the edge-adapt command."""

from edge_adapt.cli import main

main()
