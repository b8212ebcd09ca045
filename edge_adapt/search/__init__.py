"""Search over the generator and the quantile PRM: fixed budgets and instance-adaptive scaling.

Every strategy returns a :class:`SearchResult` with the same cost accounting.
"""

from edge_adapt.search.calibration.answer_model import AnswerModel
from edge_adapt.search.context import SearchContext, SearchSettings
from edge_adapt.search.ias import beams_to_keep, expansion_width, n_samples
from edge_adapt.search.searcher import Searcher
from edge_adapt.search.strategies.adaptive import ValueSampling
from edge_adapt.search.strategies.adaptive_vote import AdaptiveConsistency, AdaptiveVote
from edge_adapt.search.strategies.beam import BeamSearch, IASBeamSearch
from edge_adapt.search.strategies.best_of_n import BestOfN, IASBestOfN
from edge_adapt.search.strategies.deepconf_online import DeepConfOnline
from edge_adapt.search.strategies.esc import WindowAgreement
from edge_adapt.search.strategy import EarlyStop, Strategy, kv_cells_needed, sequences_needed
from edge_adapt.search.types import Candidate, Cost, Decision, SearchResult
from edge_adapt.search.voting import majority_confidence

__all__ = [
    "AdaptiveConsistency",
    "AdaptiveVote",
    "AnswerModel",
    "BeamSearch",
    "BestOfN",
    "Candidate",
    "Cost",
    "Decision",
    "DeepConfOnline",
    "EarlyStop",
    "IASBeamSearch",
    "IASBestOfN",
    "SearchContext",
    "SearchResult",
    "SearchSettings",
    "Searcher",
    "Strategy",
    "ValueSampling",
    "WindowAgreement",
    "beams_to_keep",
    "expansion_width",
    "majority_confidence",
    "n_samples",
    "kv_cells_needed",
    "sequences_needed",
]
