"""edge_adapt: instance-adaptive test-time search for small quantized models on the edge."""

from edge_adapt.assembly import Stack, StackSettings, open_stack
from edge_adapt.batch_allocation import (
    AnyCorrect,
    BatchAllocation,
    BatteryPacer,
    CalibratedSelection,
    PluralityVote,
    SuccessBelief,
    allocate_batch,
    even_allocation,
)
from edge_adapt.cores import ThreadChoice, choose_threads
from edge_adapt.energy import EnergyReading, Meter, detect_meters, open_meter
from edge_adapt.energy.ledger import Account, EnergyLedger
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
    TextError,
    TokenizerError,
    UnsupportedModelError,
    VerificationError,
)
from edge_adapt.generator import (
    Admission,
    Expansion,
    GenerationSession,
    GenerationStats,
    Generator,
    GeneratorConfig,
    Node,
    SamplingParams,
    StepEnd,
    StepRules,
)
from edge_adapt.guard import Budget
from edge_adapt.models import load_default_models
from edge_adapt.policy import EnergyPolicy
from edge_adapt.prm import PrefixScore, PRMFormat, PRMStats, QuantilePRM, Quantiles
from edge_adapt.search import (
    AnswerModel,
    BeamSearch,
    BestOfN,
    EarlyStop,
    IASBeamSearch,
    IASBestOfN,
    Searcher,
    SearchResult,
    SearchSettings,
    ValueSampling,
)
from edge_adapt.search.context import RunHooks
from edge_adapt.search.spec import parse_spec
from edge_adapt.settings import MeterSettings, ModelSettings, PromptSettings
from edge_adapt.tasks import ArithmeticTask, ChatTask, Problem, Task, get_task

__version__ = "0.1.0"

__all__ = [
    "ThreadChoice",
    "choose_threads",
    "Account",
    "Admission",
    "EnergyLedger",
    "GenerationSession",
    "Stack",
    "StackSettings",
    "ModelSettings",
    "PromptSettings",
    "MeterSettings",
    "open_stack",
    "AnswerModel",
    "AnyCorrect",
    "ArithmeticTask",
    "ChatTask",
    "BatchAllocation",
    "BatteryPacer",
    "CalibratedSelection",
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
    "PRMStats",
    "PluralityVote",
    "PrefixScore",
    "Problem",
    "QuantilePRM",
    "Quantiles",
    "QuantizationError",
    "RunHooks",
    "SamplingConfigError",
    "SamplingParams",
    "SearchResult",
    "SearchSettings",
    "Searcher",
    "StepEnd",
    "StepRules",
    "SuccessBelief",
    "Task",
    "TextError",
    "TokenizerError",
    "UnsupportedModelError",
    "ValueSampling",
    "VerificationError",
    "__version__",
    "allocate_batch",
    "detect_meters",
    "even_allocation",
    "get_task",
    "load_default_models",
    "open_meter",
    "parse_spec",
]
