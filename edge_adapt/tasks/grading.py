"""Final-answer extraction and equivalence for GSM8K- and MATH-style problems.

Extraction is a short ordered list of conventions (the last ``\\boxed{}``, "the answer is",
``####``, then the last number), simple enough to state here. Deciding whether two answers are
*equal* is not: ``0.5`` vs ``\\frac{1}{2}``, ``1,000`` vs ``1000``, intervals, tuples, ``\\text{}``.
That is done by math-verify (sympy-based), with a fast path for plain numbers. math-verify is an
optional dependency (``pip install 'edge-adapt[math]'``), imported only when a non-numeric
comparison needs it, so the device runtime does not carry sympy for the default task.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from edge_adapt.errors import MissingDependencyError

log = logging.getLogger(__name__)

_ANSWER_IS = re.compile(r"(?:final answer|answer) is[:\s]*", re.IGNORECASE)
_HASHES = re.compile(r"####\s*")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+")  # "1,250" yes, "9," no
_PLAIN_NUMBER = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)$")
# a number written with its unit or currency in words: "$18", "18 dollars", "20 minutes", "45%"
_NUMBER_WITH_UNIT = re.compile(r"\$?\s*(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?)\s*(?:\\?%|[A-Za-z][A-Za-z ]*)?")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|[;!?](?:\s|$)")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def _clean(answer: str) -> str:
    answer = answer.strip().rstrip(".").strip()
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
        answer = answer.strip("$").strip()
    return answer


def extract_answer(text: str) -> str | None:
    """The final answer of a solution, by the first convention that matches:
    the last ``\\boxed{}``, "the answer is ...", ``#### ...``, then the last number.

    After a marker the answer is what follows up to the end of its sentence, and a number
    written with a unit or currency in words is the number alone ("$18 dollars." is 18,
    "600. The reason..." is 600): chat models write prose around their answers, and one answer
    written two ways must be one vote. A marker followed by no number or expression ("The answer
    is N.", an instruction copied) falls through to the next convention."""
    boxed = last_boxed(text)
    if boxed:
        return _clean(boxed)
    for pattern in (_ANSWER_IS, _HASHES):
        markers = list(pattern.finditer(text))
        if markers:  # what follows the last marker, to the end of its line
            rest = text[markers[-1].end():]
            line = rest.splitlines()[0] if rest.strip() else ""
            inner = last_boxed(line)
            answer = _clean(inner) if inner else _after_marker(line)
            if answer and re.search(r"[\d\\]", answer):  # "The answer is N." copied from a prompt says nothing
                return answer
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _after_marker(line: str) -> str:
    """The answer in the text after "the answer is": its sentence, or the number in it with
    the unit dropped."""
    line = line.strip().lstrip(":").strip()
    end = _SENTENCE_END.search(line)
    sentence = _clean(line[: end.start()] if end else line)
    if "=" in sentence and not re.search(r"[\\{}]", sentence):
        # an equation ("8*8 = 64", "x = 5"): its value is the right side of the last "="
        sentence = _clean(sentence.rsplit("=", 1)[1])
    unit = _NUMBER_WITH_UNIT.fullmatch(sentence)
    if unit:
        return unit.group(1).replace(",", "")
    if re.search(r"[A-Za-z]", sentence) and not re.search(r"[\\{}]", sentence):
        # prose, not LaTeX ("indeed 76", "x = 5"): its first number is the answer
        number = _NUMBER.search(sentence)
        if number:
            return number.group(0).replace(",", "")
    return sentence


def _as_number(answer: str) -> float | None:
    s = answer.replace(",", "").replace("$", "").replace("\\%", "").replace("%", "").strip()
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s).strip()
    return float(s) if _PLAIN_NUMBER.match(s) else None


@lru_cache(maxsize=1)
def _math_verify():
    try:
        import math_verify
    except ImportError as exc:
        raise MissingDependencyError(
            "comparing LaTeX answers needs math-verify: pip install 'edge-adapt[math]'"
        ) from exc
    return math_verify


def answers_equal(predicted: str | None, gold: str) -> bool:
    """Whether two final answers are mathematically the same."""
    if predicted is None or not predicted.strip():
        return False
    a, b = _as_number(predicted), _as_number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    mv = _math_verify()
    try:
        gold_parsed = mv.parse(f"${gold}$")
        pred_parsed = mv.parse(f"${predicted}$")
        return bool(gold_parsed) and bool(pred_parsed) and bool(mv.verify(gold_parsed, pred_parsed))
    except Exception as exc:  # math-verify parses arbitrary LaTeX; a failure means "not shown equal"
        log.debug("math-verify could not compare %r and %r: %s", predicted, gold, exc)
        return False
