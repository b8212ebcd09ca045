"""What search may spend, and why: the guard search asks before each expansion (``guard``), the
energy-aware policy that answers it (``policy``) from online cost estimates of this device
(``online_costs``; the fitted energy cost model is ``edge_adapt.energy.cost_model``), one energy
budget spread over many questions (``allocation``), and the typed decisions search and the guard
record (``decisions``).

Nothing is imported here: search imports the guard and the decisions, never the policy, and the
allocation reads search's answer model.
"""
