"""The workstation side of edge_adapt: Hugging Face checkpoints to GGUF (``gguf``), calibration
rollouts and the quantile PRM's training and ONNX export (``prm``), and the recipe that rebuilds
the shipped default models (``recipe``). Needs the ``[export]`` extra (torch, transformers,
optimum-onnx, gguf); the device runtime in ``edge_adapt`` never imports it."""
