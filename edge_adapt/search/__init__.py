"""Search strategies over the generator and the quantile PRM, all returning a SearchResult."""

from edge_adapt.search.best_of_n import best_of_n
from edge_adapt.search.types import Candidate, Cost, Decision, SearchResult

__all__ = ["Candidate", "Cost", "Decision", "SearchResult", "best_of_n"]
