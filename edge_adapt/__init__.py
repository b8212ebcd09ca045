"""edge_adapt: instance-adaptive test-time search for small quantized models on the edge."""

from edge_adapt.batch_allocation import (
    AnyCorrect,
    BatchAllocation,
    PluralityVote,
    SuccessBelief,
    allocate_batch,
    even_allocation,
)
from edge_adapt.energy import EnergyReading, Meter, detect_meters, open_meter
from edge_adapt.errors import (
    BranchCapacityError,
    BudgetError,
    ContextOverflowError,
    EdgeAdaptError,
    MeterError,
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
from edge_adapt.models import load_default_models
from edge_adapt.policy import Budget, EnergyPolicy
from edge_adapt.prm import PrefixScore, PRMFormat, PRMStats, QuantilePRM, Quantiles
from edge_adapt.search import (
    BeamSearch,
    BestOfN,
    EarlyStop,
    IASBeamSearch,
    IASBestOfN,
    Searcher,
    SearchResult,
    SearchSettings,
)
from edge_adapt.search.spec import parse_spec
from edge_adapt.tasks import ArithmeticTask, Problem, Task, get_task

__version__ = "0.1.0"

__all__ = [
    "AnyCorrect",
    "ArithmeticTask",
    "BatchAllocation",
    "BeamSearch",
    "BestOfN",
    "BranchCapacityError",
    "Budget",
    "BudgetError",
    "ContextOverflowError",
    "EarlyStop",
    "EdgeAdaptError",
    "EnergyPolicy",
    "EnergyReading",
    "Expansion",
    "GenerationStats",
    "Generator",
    "GeneratorConfig",
    "IASBeamSearch",
    "IASBestOfN",
    "Meter",
    "MeterError",
    "MissingDependencyError",
    "ModelLoadError",
    "Node",
    "PRMFormat",
    "PluralityVote",
    "PRMStats",
    "PrefixScore",
    "Problem",
    "QuantilePRM",
    "Quantiles",
    "QuantizationError",
    "SamplingConfigError",
    "SamplingParams",
    "SearchResult",
    "SearchSettings",
    "Searcher",
    "StepEnd",
    "StepRules",
    "SuccessBelief",
    "Task",
    "TokenizerError",
    "UnsupportedModelError",
    "VerificationError",
    "__version__",
    "allocate_batch",
    "even_allocation",
    "detect_meters",
    "get_task",
    "load_default_models",
    "open_meter",
    "parse_spec",
]
