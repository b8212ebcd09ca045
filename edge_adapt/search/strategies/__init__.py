"""The search strategies, one spec family per module (named as its spec: ``adaptive``, ``adaptive_vote``
and ``consistency``, ``best_of_n`` and its votes, ``beam``, ``esc``, ``deepconf_online``). Each
runs itself on a :class:`~edge_adapt.search.context.SearchContext`; nothing is imported here.
"""
