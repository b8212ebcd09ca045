"""``edge-adapt export gguf`` and ``export quantize``: a Hugging Face checkpoint to verified, quantized GGUF files."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from edge_adapt.cli.console import console, err_console, human_bytes
from edge_adapt_tools.cli.loading import load_tool


@click.command("gguf")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Folder for the GGUF files.")
@click.option("--outtype", type=click.Choice(["f32", "f16", "bf16"]), default="f32", show_default=True,
              help="Precision of the unquantized file.")
@click.option("-q", "--quantize", "quant_types", multiple=True, metavar="TYPE",
              help="Also quantize: Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0... (repeatable).")
@click.option("--name", help="File name stem (default: the checkpoint folder's name).")
@click.option("--no-verify", is_flag=True, help="Skip the tokenizer and logits checks against PyTorch.")
@click.option("--threads", type=click.IntRange(min=1), help="Quantization threads (default: all cores).")
def export_gguf_cmd(checkpoint: Path, out_dir: Path, outtype: str, quant_types: tuple[str, ...], name: str | None,
                    no_verify: bool, threads: int | None) -> None:
    """Convert a Llama, Qwen2, Qwen3, SmolLM3 or Gemma 3 Hugging Face CHECKPOINT folder to GGUF, verify it, and quantize it.

    The unquantized file is checked before it is written under its final name: tokenization
    must equal the Hugging Face tokenizer's on a probe set, and logits must match PyTorch
    (max abs diff printed; for F32 the greedy continuation must be identical).

    \b
    Examples:
      edge-adapt export gguf ./Qwen2.5-Math-1.5B -o ./gguf --outtype f16 -q Q4_K_M
      edge-adapt export gguf ./tiny-llama -o out -q Q8_0 -q Q4_K_M -q Q5_K_M -q Q4_0
    """
    gguf_export = load_tool("edge_adapt_tools.gguf.export")
    quantize = load_tool("edge_adapt_tools.gguf.quantize")
    for q in quant_types:
        quantize.resolve_quant_type(q)  # a typo fails before minutes of work
    with err_console.status("exporting") as status:
        result = gguf_export.export_gguf(
            checkpoint, out_dir, outtype=outtype, quant_types=quant_types, verify=not no_verify,
            name=name, threads=threads, progress=lambda message: status.update(message),
        )
    conv = result.conversion
    console.print(
        f"[bold green]wrote[/] {conv.path}  ({conv.architecture}, {conv.outtype.upper()}, "
        f"{conv.n_params / 1e6:.2f}M parameters, {human_bytes(conv.size_bytes)}, tokenizer pre={conv.tokenizer_pre!r}, "
        f"{'tied' if conv.tied_embeddings else 'untied'} embeddings, {conv.seconds:.2f}s)"
    )
    if result.tokenizer is not None and result.logits is not None:
        tok, lg = result.tokenizer, result.logits
        console.print(f"tokenization: identical to Hugging Face on {tok.n_probes}/{tok.n_probes} probes")
        console.print(
            f"logits vs PyTorch: max abs diff {lg.max_abs_diff:.3g} over {lg.n_positions} positions "
            f"(largest |logit| {lg.logit_scale:.3g}; tolerance {lg.tolerance:g} x that), "
            f"top-1 agreement {lg.top1_agreement:.0%}, greedy continuation "
            f"{'identical' if lg.greedy_match else 'differs (near-tie; allowed for 16-bit files)'}"
        )
    else:
        console.print("[yellow]verification skipped (--no-verify)[/]")
    if result.quantized:
        _print_quantized(result.quantized)


def quantize_fallbacks(fallbacks: list) -> list[str]:
    return load_tool("edge_adapt_tools.gguf.quantize").fallback_summary(fallbacks)


def _print_quantized(files: list) -> None:
    table = Table(title="Quantized files (logits compared with PyTorch, reported not enforced)", title_justify="left")
    for col in ("type", "size", "ratio", "tensor types", "max |Δlogit|", "top-1", "greedy", "fallbacks"):
        table.add_column(col)
    for qf in files:
        r, p = qf.report, qf.parity
        table.add_row(
            r.quant_type, human_bytes(r.size_bytes), f"{r.ratio:.2f}",
            ", ".join(f"{k}:{v}" for k, v in r.tensor_types.items()),
            f"{p.max_abs_diff:.3g}" if p else "-", f"{p.top1_agreement:.0%}" if p else "-",
            ("same" if p.greedy_match else "differs") if p else "-",
            str(len(r.fallbacks)) if r.fallbacks else "none",
        )
    console.print(table)
    for qf in files:
        console.print(f"[bold green]wrote[/] {qf.report.path}")
        for line in quantize_fallbacks(qf.report.fallbacks):
            console.print(f"[yellow]fallback[/] {qf.report.quant_type}: {line}", highlight=False)


@click.command("quantize")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-t", "--type", "quant_type", required=True, metavar="TYPE", help="Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0...")
@click.option("--threads", type=click.IntRange(min=1), help="Threads (default: all cores).")
def quantize_cmd(source: Path, dest: Path, quant_type: str, threads: int | None) -> None:
    """Quantize an F32/F16/BF16 GGUF SOURCE into DEST with llama.cpp's quantizer.

    Tensors whose rows cannot hold the type (K-quants need multiples of 256) are listed with
    the type llama.cpp used instead.

    \b
    Example:
      edge-adapt export quantize model-F32.gguf model-Q4_K_M.gguf -t Q4_K_M
    """
    quantize = load_tool("edge_adapt_tools.gguf.quantize")
    with err_console.status(f"quantizing to {quant_type}"):
        report = quantize.quantize_gguf(source, dest, quant_type, threads=threads)
    console.print(
        f"[bold green]wrote[/] {report.path} ({report.quant_type}, {human_bytes(report.size_bytes)}, "
        f"{report.ratio:.2f}x of the source, {report.seconds:.1f}s)"
    )
    console.print("tensor types: " + ", ".join(f"{k}: {v}" for k, v in report.tensor_types.items()))
    for line in quantize_fallbacks(report.fallbacks):
        console.print(f"[yellow]fallback[/] {line}", highlight=False)
    if not report.fallbacks:
        console.print("no per-tensor fallbacks")


