"""edge_adapt: instance-adaptive test-time search for small quantized models on the edge."""

from edge_adapt.errors import (
    BranchCapacityError,
    ContextOverflowError,
    EdgeAdaptError,
    MissingDependencyError,
    ModelLoadError,
    QuantizationError,
    SamplingConfigError,
    TokenizerError,
    UnsupportedModelError,
    VerificationError,
)
from edge_adapt.generator import (
    Expansion,
    GenerationStats,
    Generator,
    GeneratorConfig,
    Node,
    SamplingParams,
    StepEnd,
    StepRules,
)
from edge_adapt.prm import PrefixScore, PRMFormat, PRMStats, QuantilePRM, Quantiles
from edge_adapt.tasks import ArithmeticTask, Problem, Task

__version__ = "0.1.0"

__all__ = [
    "ArithmeticTask",
    "BranchCapacityError",
    "ContextOverflowError",
    "EdgeAdaptError",
    "Expansion",
    "GenerationStats",
    "Generator",
    "GeneratorConfig",
    "MissingDependencyError",
    "ModelLoadError",
    "Node",
    "PRMFormat",
    "PRMStats",
    "PrefixScore",
    "Problem",
    "QuantilePRM",
    "Quantiles",
    "QuantizationError",
    "SamplingConfigError",
    "SamplingParams",
    "StepEnd",
    "StepRules",
    "Task",
    "TokenizerError",
    "UnsupportedModelError",
    "VerificationError",
    "__version__",
]
