"""The GGUF generator runtime: step-by-step sampling on shared-prefix branches (llama.cpp)."""

from edge_adapt.generator.runtime import Expansion, GenerationStats, Generator, GeneratorConfig, Node
from edge_adapt.generator.sampling import SamplingParams
from edge_adapt.generator.steps import StepEnd, StepRules

__all__ = [
    "Expansion",
    "GenerationStats",
    "Generator",
    "GeneratorConfig",
    "Node",
    "SamplingParams",
    "StepEnd",
    "StepRules",
]
