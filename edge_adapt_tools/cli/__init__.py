"""``edge-adapt export ...``: the workstation commands, registered with the device CLI through the
``edge_adapt.commands`` entry point (the device package never imports this one)."""

from __future__ import annotations

import click

from edge_adapt_tools.cli.gguf_cmds import export_gguf_cmd, quantize_cmd
from edge_adapt_tools.cli.prm_cmds import prm_cmd, selector_cmd
from edge_adapt_tools.cli.recipe_cmd import recipe_cmd
from edge_adapt_tools.cli.rollouts_cmd import rollouts_cmd


@click.group("export")
def export_group() -> None:
    """Convert Hugging Face models for the device runtime (GGUF generator, ONNX PRM); needs the [export] extra."""


export_group.add_command(export_gguf_cmd, name="gguf")
export_group.add_command(quantize_cmd, name="quantize")
export_group.add_command(rollouts_cmd, name="rollouts")
export_group.add_command(prm_cmd, name="prm")
export_group.add_command(selector_cmd, name="selector")
export_group.add_command(recipe_cmd, name="recipe")
