"""Builds ``edge_adapt/data/probe.onnx``, the model ``edge-adapt info`` runs on every provider.

ONNX Runtime lists providers it cannot actually use (a CUDA provider without cuDNN, TensorRT
without its libraries) and silently falls back to CPU, so the runtime proves a provider by
running this model on it. The runtime has no ``onnx`` dependency, hence the shipped file;
regenerate it with ``python -m edge_adapt_tools.prm.probe_onnx``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_adapt.prm.providers import PROBE_BIAS, PROBE_MODEL, PROBE_WEIGHT


def build_probe() -> onnx.ModelProto:
    """y = sigmoid(x @ W + b): a matmul, an add and an activation, which every provider runs."""
    weight = numpy_helper.from_array(PROBE_WEIGHT.astype(np.float32), "W")
    bias = numpy_helper.from_array(PROBE_BIAS.astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["y"]),
        ],
        "edge_adapt_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", PROBE_WEIGHT.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", PROBE_WEIGHT.shape[1]])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge_adapt")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def main() -> None:
    out = Path(PROBE_MODEL)
    out.write_bytes(build_probe().SerializeToString())
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
