"""The GGUF generator runtime: step-by-step sampling on shared-prefix branches (llama.cpp)."""

from edge_adapt.generator.admission import Admission
from edge_adapt.generator.config import GeneratorConfig
from edge_adapt.generator.runtime import Generator
from edge_adapt.generator.sampling import SamplingParams
from edge_adapt.generator.session import GenerationSession
from edge_adapt.generator.steps import StepEnd, StepRules
from edge_adapt.generator.tree import Expansion, GenerationStats, Node

__all__ = [
    "Admission",
    "Expansion",
    "GenerationSession",
    "GenerationStats",
    "Generator",
    "GeneratorConfig",
    "Node",
    "SamplingParams",
    "StepEnd",
    "StepRules",
]
