"""Calibrating a PRM for one generator: Monte-Carlo rollouts, quantile-regression training, the
generator's likelihood term, ONNX export and checks, and adaptive search's answer model."""
