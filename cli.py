"""Run the ``edge-adapt`` command from a checkout: ``python cli.py info``."""

from edge_adapt.cli import main

if __name__ == "__main__":
    main()
