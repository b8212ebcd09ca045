"""``edge-adapt info``: what this machine offers the runtime."""

from __future__ import annotations

import dataclasses
import json

import click
from rich.table import Table

from edge_adapt.cli.console import console, human_bytes
from edge_adapt.info import environment_report


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info(as_json: bool) -> None:
    """Versions, llama.cpp build and devices, ONNX Runtime providers that really run, power meters.

    Each ONNX Runtime provider is proven with a tiny inference: providers that are listed but
    fail to initialise (say CUDA without cuDNN) are shown as not working.

    \b
    Examples:
      edge-adapt info
      edge-adapt info --json > env.json
    """
    report = environment_report()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2))
        return
    console.print(f"[bold]edge-adapt[/] {report.packages.get('edge-adapt', '?')}  ·  Python {report.python}  ·  "
                  f"{report.platform}  ·  {report.cpu_threads} CPU threads")

    packages = Table(title="Packages", title_justify="left")
    packages.add_column("package")
    packages.add_column("version")
    for name, version in report.packages.items():
        packages.add_row(name, version)
    console.print(packages)

    llama = Table(title="llama.cpp", title_justify="left")
    llama.add_column("device")
    llama.add_column("kind")
    llama.add_column("memory", justify="right")
    llama.add_column("description")
    for dev in report.llama_devices:
        llama.add_row(dev.name, dev.kind, human_bytes(dev.memory_total) if dev.memory_total else "-", dev.description)
    console.print(llama)
    offload = "[green]yes[/]" if report.llama_gpu_offload else \
        "[yellow]no[/] (a CPU-only build; docs/CLUSTER.md shows a CUDA build)"
    console.print(f"GPU offload compiled in: {offload}")
    console.print(f"CPU features: {report.llama_system_info}", highlight=False)

    onnx = Table(title="ONNX Runtime providers (each checked with a real inference)", title_justify="left")
    onnx.add_column("provider")
    onnx.add_column("works")
    onnx.add_column("detail")
    for check in report.onnx_providers:
        onnx.add_row(check.name, "[green]yes[/]" if check.works else "[red]no[/]", check.detail)
    if report.onnx_error:
        console.print(f"[yellow]ONNX Runtime:[/] {report.onnx_error}")
    else:
        console.print(onnx)

    meters = Table(title="Power meters", title_justify="left")
    meters.add_column("meter")
    meters.add_column("available")
    meters.add_column("detail")
    for meter in report.meters:
        meters.add_row(meter.name, "[green]yes[/]" if meter.available else "no", meter.detail)
    console.print(meters)
