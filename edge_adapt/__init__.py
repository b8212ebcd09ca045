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

__version__ = "0.1.0"

__all__ = [
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
    "QuantizationError",
    "SamplingConfigError",
    "SamplingParams",
    "StepEnd",
    "StepRules",
    "TokenizerError",
    "UnsupportedModelError",
    "VerificationError",
    "__version__",
]
