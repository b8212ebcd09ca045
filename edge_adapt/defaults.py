"""What runs when the user names nothing: the task, whether a PRM is read, and the search, with why.

The one home for defaults: ``solve``, ``bench``, ``calibrate``, ``battery`` and ``serve`` ask
:func:`choose`; nothing else decides. It reads what the user passed and what sits beside the
generator (its calibration file, checked against that very generator).

- **PRM**: the shipped PRM was fitted for the shipped generator only, so a user's own generator
  runs without a PRM unless one is given (:func:`runs_without_prm`).
- **Task**: the one given; else to ``solve``, the task the generator was calibrated on; else per
  command (:data:`TASKS`): a user's own generator chats when served and reads gsm8k when solved or
  calibrated; the shipped models answer the shipped arithmetic.
- **Search** (:func:`search_default`): without a PRM, the generator's calibrated adaptive vote,
  else Adaptive-Consistency. With a PRM and a vote model calibrated with that very PRM
  (``calibrate --prm``): the adaptive vote too, which reads the PRM's scores only where they
  predicted held-out questions better than the generator's own confidence. With a PRM alone:
  value-aware sampling by the PRM's answer model. ``bench`` runs the fixed-budget frontier with
  the adaptive strategies placed on it (:data:`DEFAULT_STRATEGIES`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from edge_adapt.errors import EdgeAdaptError, ModelLoadError
from edge_adapt.models import prm_fingerprint, sha256_of
from edge_adapt.search.calibration.vote_model import VoteModel
from edge_adapt.search.spec import PRM_FREE_KINDS, parse_spec
from edge_adapt.settings import ModelSettings

log = logging.getLogger(__name__)

Command = Literal["solve", "bench", "calibrate", "battery", "serve"]

DEFAULT_SPEC = "adaptive:price=8"  # with a PRM and no calibration with it
CONSISTENCY_SPEC = "consistency:n_max=16"  # without a PRM or a calibration
# The fixed-budget frontier (best-of-N by the PRM and majority votes at N = 1..32), the paper's
# IAS variants, and value-aware sampling at several prices: every point placed on the fixed curve.
DEFAULT_STRATEGIES = (
    "best_of_n:n=1", "best_of_n:n=2", "best_of_n:n=4", "best_of_n:n=8", "best_of_n:n=16", "best_of_n:n=32",
    "majority:n=2", "majority:n=4", "majority:n=8", "majority:n=16", "majority:n=32",
    "ias_best_of_n:n_max=32",
    "ias_majority:n_max=16",
    "ias_best_of_n:n_max=32+es",
    "ias_beam:k_max=4,m_max=4",
    "adaptive:price=4", "adaptive:price=8", "adaptive:price=16", "adaptive:price=32", "adaptive:price=64",
)
# without a PRM: plain sampling and majority votes (the fixed ladder a PRM has to beat)
NO_PRM_STRATEGIES = ("majority:n=1", "majority:n=2", "majority:n=4", "majority:n=8", "majority:n=16")
# the task per command when none is given and the calibration names none: (own generator, shipped models)
TASKS: dict[Command, tuple[str, str]] = {
    "solve": ("gsm8k", "default"), "calibrate": ("gsm8k", "gsm8k"), "serve": ("chat", "default"),
    "bench": ("default", "default"), "battery": ("default", "default"),
}


@dataclass(frozen=True)
class Defaults:
    """What a command runs: its task, its strategies (one search, or ``bench``'s matrix), why, and
    the generator's vote model where one sits beside it (read once, checked for this generator)."""

    task: str
    strategies: tuple[str, ...]
    why: str
    vote_model: VoteModel | None


def runs_without_prm(no_prm: bool, generator_given: bool, prm_given: bool) -> bool:
    """Whether a command runs without a PRM: asked to, or a user's own generator and no PRM given."""
    return no_prm or (generator_given and not prm_given)


def choose(command: Command, models: ModelSettings, *, own_generator: bool, task: str | None = None,
           strategies: tuple[str, ...] = ()) -> Defaults:
    """The defaults for ``command`` with these (resolved) models, keeping what the user gave."""
    vote_model = read_calibration(models) if command != "calibrate" else None  # calibrate writes it
    calibrated_task = vote_model.provenance.get("task") if vote_model is not None and command == "solve" else None
    task = task or calibrated_task or TASKS[command][0 if own_generator else 1]
    if strategies:
        return Defaults(task, strategies, "given", vote_model)
    if command == "bench":
        matrix, why = (NO_PRM_STRATEGIES, "no PRM: the majority-vote ladder") if models.prm is None else \
            (DEFAULT_STRATEGIES, "the fixed-budget frontier with adaptive search placed on it")
        return Defaults(task, matrix, why, vote_model)
    spec, why = search_default(models, vote_model)
    return Defaults(task, (spec,), why, vote_model)


def search_default(models: ModelSettings, vote_model: VoteModel | None) -> tuple[str, str]:
    """The search a question gets when told nothing else, and why (see the module's docstring)."""
    if models.prm is None:
        own = vote_model.without_prm() if vote_model is not None else None
        if own is None:
            why = "no PRM and no calibration file" if vote_model is None else \
                "no PRM, and the calibration file has no table without one (recalibrate)"
            return vote_model_spec(None), f"{why}: Adaptive-Consistency"
        return vote_model_spec(own), f"no PRM: the generator's calibrated adaptive vote (evidence: {own.feature})"
    calibrated_with = vote_model.provenance.get("prm_sha256") if vote_model is not None else None
    if vote_model is not None and calibrated_with == prm_fingerprint(models.prm):
        if vote_model.needs_prm:
            return vote_model_spec(vote_model), ("the adaptive vote calibrated with this PRM (evidence: its scores, chosen "
                                                 "on held-out calibration questions)")
        return vote_model_spec(vote_model), ("the adaptive vote calibrated with this PRM, which did not earn its keep on "
                                             f"held-out calibration questions: evidence {vote_model.feature}, samples not scored")
    return DEFAULT_SPEC, "value-aware sampling with the PRM"


def vote_model_spec(model: VoteModel | None) -> str:
    """What runs without a PRM when told nothing else: the calibrated adaptive vote at the price
    calibration chose, or Adaptive-Consistency."""
    return f"adaptive_vote:price={model.price:g}" if model is not None else CONSISTENCY_SPEC


def read_calibration(models: ModelSettings) -> VoteModel | None:
    """The generator's vote model: the given calibration file, else the one beside the GGUF (when
    there is one). One fitted for another generator is refused."""
    generator, path = models.generator, models.calibration_file
    if not path.is_file():
        if models.calibration is None:
            return None
        raise ModelLoadError(f"the calibration file {path} is not there: give the file `edge-adapt calibrate -o` wrote, "
                             "or leave --calibration out to read the one beside the generator")
    model = VoteModel.load(path)
    fitted_for = str(model.provenance.get("generator_sha256", ""))
    if fitted_for != sha256_of(generator):
        raise ModelLoadError(f"{path} was calibrated for another generator (sha256 {fitted_for[:12] or '?'}...), not "
                             f"{generator}: rerun `edge-adapt calibrate --generator {generator} ...`, or "
                             "remove the file to run without it")
    return model


def unservable(spec: str, models: ModelSettings, *, flag: str) -> str | None:
    """Why the search ``spec`` (given with ``flag``, or the default) cannot run with these models,
    naming what to pass instead; None when it can. Checked before any model loads. (Its paths
    cannot outgrow a server's --max-n: the stack is sized for the default search too.)"""
    try:
        strategy = parse_spec(spec)
    except EdgeAdaptError as exc:
        return f"{flag} {spec}: {exc}"
    if strategy.needs_prm and models.prm is None:
        return (f"{flag} {spec} reads PRM scores and this runs without a PRM (--no-prm, or your own --generator without "
                f"--prm): give --prm DIR, or a search that needs none ({', '.join(PRM_FREE_KINDS)})")
    return None


GIVE_UP_AFTER = 4  # samples without an extractable answer after which a search stops, where no calibration chose it
# a chat model's turn: its first samples decide whether it holds anything to compare (a greeting
# does not), so it looks at two: one sample more than a lone answer, decoded beside it
CHAT_LOOK = 2


def give_up_after(vote_model: VoteModel | None, task: str) -> int:
    """After how many samples without an extractable answer a search stops: a chat turn after
    :data:`CHAT_LOOK`; a task's question after what calibration chose on the user's questions
    (``edge-adapt calibrate`` stores it), else :data:`GIVE_UP_AFTER`."""
    if task == "chat":
        return CHAT_LOOK
    chosen = vote_model.report.get("give_up_after") if vote_model is not None else None
    return int(chosen) if chosen else GIVE_UP_AFTER
