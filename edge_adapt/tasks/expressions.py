"""Between the usual arithmetic notation and the default task's chains.

The models read a question as a *chain*: operations applied one at a time to the running result,
``Q:454+762*3`` meaning (454+762)*3. People read ``454+762*3`` by the usual precedence, as
454+(762*3). So a user's question is read the usual way (parentheses allowed) and rewritten as
the chain with that value, and a chain is shown to people with the parentheses it needs.
"""

from __future__ import annotations

import ast
import re

from edge_adapt.errors import EdgeAdaptError

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
_CHAIN = re.compile(r"\d+|[+\-*]")
MAX_DIGITS = 15  # far beyond the task's levels, and within exact integer arithmetic everywhere
MAX_OPERATIONS = 200  # far beyond the task's levels; bounds the parser's recursion
MAX_NESTING = 32  # parentheses inside parentheses
_SPOKEN = ((re.compile(r"\bmultiplied\s+by\b|\btimes\b|[×·✕]", re.IGNORECASE), "*"),
           (re.compile(r"\bplus\b", re.IGNORECASE), "+"), (re.compile(r"\bminus\b|[−–]", re.IGNORECASE), "-"))
_EXPRESSION = re.compile(r"[\d(][\d\s+\-*()]*[\d)]|\d")


def expression_in(text: str) -> str:
    """The arithmetic expression in a question put in words around it, as a person types it to an
    assistant: "What is 12 + 30?", "what's (454+762)*3", "compute 7 times 6". Text that holds a
    number outside its one expression (two expressions, a word problem) is an
    :class:`EdgeAdaptError` that says so; text that is all expression is returned as it is."""
    spoken = text
    for pattern, op in _SPOKEN:
        spoken = pattern.sub(op, spoken)
    spans = [m for m in _EXPRESSION.finditer(spoken) if re.search(r"\d", m.group())]
    if not spans:
        return text
    if len(spans) > 1:
        raise EdgeAdaptError(f"{_shown(text)!r} holds {len(spans)} separate numbers or expressions; ask one "
                             "expression, e.g. 'What is (454+762)*3?'")
    match = spans[0]
    rest = spoken[: match.start()] + spoken[match.end():]
    if not rest.strip():
        return text
    if re.search(r"[\d+*/^=]", rest):
        raise EdgeAdaptError(f"{_shown(text)!r} holds more than one arithmetic expression (or a number outside it); "
                             "ask one expression, e.g. 'What is (454+762)*3?'")
    return match.group().strip()


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def to_chain(text: str) -> str:
    """The chain (in the models' notation) with the value ``text`` has by the usual precedence.

    ``454+762*3`` is ``762*3+454``; ``(454+762)*3`` is ``454+762*3``. An expression no single
    chain computes (``12*3+45*6``: two products added) is an :class:`EdgeAdaptError` that says
    how to write one.
    """
    shown = _shown(text)
    expression = text.replace(" ", "")
    if not expression or not set(expression) <= set("0123456789+-*()"):
        raise EdgeAdaptError(f"{shown!r} is not an arithmetic expression of whole numbers, +, -, * and parentheses")
    if (operations := sum(expression.count(op) for op in "+-*")) > MAX_OPERATIONS:
        raise EdgeAdaptError(f"{shown!r} has {operations} operations; a question here has at most {MAX_OPERATIONS}")
    if _nesting(expression) > MAX_NESTING:
        raise EdgeAdaptError(f"{shown!r} nests parentheses more than {MAX_NESTING} deep")
    if (longest := max((len(n) for n in re.findall(r"\d+", expression)), default=0)) > MAX_DIGITS:
        raise EdgeAdaptError(f"{shown!r} has a number of {longest} digits; numbers here have at most {MAX_DIGITS}")
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise EdgeAdaptError(f"{shown!r} is not a well-formed arithmetic expression") from None
    parts = _chain(tree)
    if parts is None:
        raise EdgeAdaptError(
            f"{shown!r} cannot be asked as one chain (each operation applies to the running result and one number)"
        )
    if len(parts) == 1:
        raise EdgeAdaptError(f"{shown!r} asks no operation; a question applies at least one +, - or *")
    return "".join(parts)


def _nesting(expression: str) -> int:
    depth = deepest = 0
    for char in expression:
        depth += (char == "(") - (char == ")")
        deepest = max(deepest, depth)
    return deepest


def _chain(node: ast.expr) -> list[str] | None:
    if _is_number(node):
        return [str(node.value)]  # type: ignore[attr-defined]
    if not (isinstance(node, ast.BinOp) and type(node.op) in _OPS):
        return None
    op = _OPS[type(node.op)]
    if _is_number(node.right):
        left = _chain(node.left)
        return None if left is None else [*left, op, str(node.right.value)]  # type: ignore[attr-defined]
    if op in "+*" and _is_number(node.left):  # commutative: the running result goes first
        right = _chain(node.right)
        return None if right is None else [*right, op, str(node.left.value)]  # type: ignore[attr-defined]
    return None


def _is_number(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def to_conventional(chain: str) -> str:
    """A chain written with the parentheses the usual precedence needs: ``454+762*3`` is shown as
    ``(454+762)*3``."""
    tokens = _CHAIN.findall(chain)
    out, last_adds = tokens[0], False
    for op, number in zip(tokens[1::2], tokens[2::2], strict=True):
        if op == "*" and last_adds:
            out = f"({out})"
        out += op + number
        last_adds = op != "*"
    return out
