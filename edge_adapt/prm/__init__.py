"""The calibrated quantile PRM on the device: input format, exported bundle, ONNX Runtime scorer."""

from edge_adapt.prm.bundle import PRMBundle
from edge_adapt.prm.format import PRMFormat, encode_prefix
from edge_adapt.prm.protocol import PRM
from edge_adapt.prm.scorer import PrefixScore, PRMStats, QuantilePRM, Quantiles

__all__ = ["PRM", "PRMBundle", "PRMFormat", "PRMStats", "PrefixScore", "QuantilePRM", "Quantiles", "encode_prefix"]
