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

__version__ = "0.1.0"
