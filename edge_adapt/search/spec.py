"""Strategies written as short strings, for the command line and for benchmark records.

    best_of_n:n=16        fixed best-of-N, ranked by the PRM
    majority:n=16         best-of-N, plain majority vote
    weighted:n=16         best-of-N, PRM-weighted majority vote
    cisc:n=16             best-of-N, a vote weighed by the generator's confidence (CISC)
    deepconf:n=16         best-of-N, the most confident 90% vote, weighed by confidence (DeepConf offline)
    deepconf_online:n=16  4 warm-up samples set a confidence floor; later ones are cut off below it (DeepConf online)
    esc:n_max=16,window=4 windows of samples until one window agrees (ESC)
    consistency:n_max=16  one sample at a time until the leader's lead is settled (Adaptive-Consistency)
    adaptive_vote:price=8 value-aware sequential vote on the generator's own evidence (its calibration file;
                          keep=0.9 adds DeepConf's online termination after the first 4 samples)
    ias_best_of_n:n_max=32,confidence=0.99
    beam:n=16,width=4     step-level beam search
    ias_beam:k_max=4,m_max=4
    ...+es                any best-of-N with Adaptive-Consistency early stopping (+es=0.95 sets the threshold)
    adaptive:price=8      value-aware sequential sampling: a sample is drawn while it is expected to earn
                          `price` accuracy points per 1,000 tokens of work (n_max, stop_at, use_prm, ...)

A spec round-trips: ``format_spec(parse_spec(s))`` names the same strategy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from edge_adapt.errors import SamplingConfigError
from edge_adapt.search.strategies.adaptive import ValueSampling
from edge_adapt.search.strategies.adaptive_vote import AdaptiveConsistency, AdaptiveVote
from edge_adapt.search.strategies.beam import BeamSearch, IASBeamSearch
from edge_adapt.search.strategies.best_of_n import BestOfN, IASBestOfN
from edge_adapt.search.strategies.deepconf_online import DeepConfOnline
from edge_adapt.search.strategies.esc import WindowAgreement
from edge_adapt.search.strategy import EarlyStop, Strategy

STRATEGY_TYPES: tuple[type[Strategy], ...] = (BestOfN, IASBestOfN, BeamSearch, IASBeamSearch, ValueSampling, AdaptiveVote,
                                              AdaptiveConsistency, WindowAgreement, DeepConfOnline)
# spec kind -> (strategy type, the settings the kind fixes), as each strategy declares them
_KINDS: dict[str, tuple[type[Strategy], dict[str, Any]]] = {
    kind: (cls, fixed) for cls in STRATEGY_TYPES for kind, fixed in cls.SPEC_KINDS.items()
}
STRATEGY_KINDS = tuple(_KINDS)


def parse_spec(spec: str) -> Strategy:
    """``kind[:key=value,...][+es[=threshold]]`` -> a strategy named by its canonical spec."""
    text = spec.strip()
    early: EarlyStop | None = None
    if "+es" in text:
        text, _, threshold = text.partition("+es")
        try:
            early = EarlyStop(threshold=float(threshold.lstrip("="))) if threshold.strip("=") else EarlyStop()
        except ValueError:
            raise SamplingConfigError(f"{spec!r}: +es takes a threshold in (0, 1], e.g. +es=0.9; got "
                                      f"{threshold.lstrip('=')!r}") from None
    kind, _, args = text.partition(":")
    if kind not in _KINDS:
        raise SamplingConfigError(f"unknown strategy {kind!r} in {spec!r}; choose one of {', '.join(_KINDS)}")
    cls, fixed = _KINDS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = dict(fixed)
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, eq, raw = part.partition("=")
        if not eq or key not in fields or key in ("name", "select", "early_stop"):
            allowed = ", ".join(k for k in fields if k not in ("name", "select", "early_stop"))
            raise SamplingConfigError(f"{spec!r}: bad setting {part!r}; {kind} takes {allowed}")
        default = fields[key].default
        try:
            values[key] = _parse_value(raw, default)
        except SamplingConfigError as exc:
            raise SamplingConfigError(f"{spec!r}: {key} {exc}, got {raw!r}") from None
        except ValueError as exc:
            raise SamplingConfigError(f"{spec!r}: {key} must be a {type(default).__name__}, got {raw!r}") from exc
    if early is not None:
        if "early_stop" not in fields:
            raise SamplingConfigError(f"{spec!r}: early stopping (+es) composes with best-of-N strategies only")
        values["early_stop"] = early
    strategy = cls(**values)  # each strategy checks its own settings
    return dataclasses.replace(strategy, name=format_spec(strategy, kind))


def _parse_value(raw: str, default: Any) -> Any:
    if isinstance(default, bool):  # bool("false") is True
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if isinstance(default, float) and not math.isfinite(float(raw)):
        raise SamplingConfigError("must be a finite number")
    return type(default)(raw) if default is not dataclasses.MISSING else raw


def format_spec(strategy: Strategy, kind: str | None = None) -> str:
    """The canonical spec: the kind and every setting that differs from its default."""
    if kind is None:
        kind = next(k for k, (cls, fixed) in _KINDS.items()
                    if type(strategy) is cls and all(getattr(strategy, f) == v for f, v in fixed.items()))
    cls, fixed = _KINDS[kind]
    defaults = cls()
    keys = [f.name for f in dataclasses.fields(cls) if f.name not in ("name", "select", "early_stop")]
    # the budget-defining setting is always written, so names say what they cost
    always = (cls.SPEC_MAIN, *cls.SPEC_ALWAYS)
    parts = [f"{k}={_format_value(getattr(strategy, k))}" for k in keys if k in always or getattr(strategy,
                                                                                                  k) != getattr(defaults, k)]
    text = f"{kind}:{','.join(parts)}"
    es = getattr(strategy, "early_stop", None)
    if es is not None:
        text += "+es" if es == EarlyStop() else f"+es={es.threshold:g}"
    return text


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


# the spec kinds a stack without a PRM runs (their defaults read no score)
PRM_FREE_KINDS = tuple(kind for kind in STRATEGY_KINDS if not parse_spec(kind).needs_prm)
