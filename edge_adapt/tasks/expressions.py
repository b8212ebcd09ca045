"""Between the usual arithmetic notation and the default task's chains.

The models read a question as a *chain*: operations applied one at a time to the running result,
``Q:454+762*3`` meaning (454+762)*3. People read ``454+762*3`` by the usual precedence, as
454+(762*3). So a user's question is read the usual way (parentheses allowed) and rewritten as
the chain with that value, and a chain is shown to people with the parentheses it needs.

The reader is a small operator-precedence parser of its own, iterative from end to end: CPython's
``ast.parse`` recurses in C and fails with a ``SystemError`` (not a ``SyntaxError``) on a deep
expression when the calling thread's stack is already deep, so what a server answered depended on
the state of its stack. Here a question's cost is linear in its length and bounded by the limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge_adapt.errors import EdgeAdaptError

_CHAIN = re.compile(r"\d+|[+\-*]")
_TOKEN = re.compile(r"\d+|[+\-*()]")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2}
MAX_DIGITS = 15  # far beyond the task's levels, and within exact integer arithmetic everywhere
MAX_OPERATIONS = 200  # far beyond the task's levels
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
    tree = _parse(expression)
    if tree is None:
        raise EdgeAdaptError(f"{shown!r} is not a well-formed arithmetic expression")
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


@dataclass(frozen=True)
class _Operation:
    op: str
    left: _Node
    right: _Node


_Node = int | _Operation


def _parse(expression: str) -> _Node | None:
    """The tree of ``expression`` by the usual precedence (``*`` before ``+`` and ``-``, all
    left-associative), or None where it is not well formed (a sign before a number included: a
    chain's numbers are whole and non-negative). Shunting-yard: no recursion."""
    operands: list[_Node] = []
    operators: list[str] = []

    def reduce() -> None:
        right, left = operands.pop(), operands.pop()
        operands.append(_Operation(operators.pop(), left, right))

    want_operand = True
    for token in _TOKEN.findall(expression):
        if want_operand:
            if token == "(":
                operators.append(token)
            elif token.isdigit():
                operands.append(int(token))
                want_operand = False
            else:
                return None
        elif token == ")":
            while operators and operators[-1] != "(":
                reduce()
            if not operators:
                return None
            operators.pop()
        elif token in _PRECEDENCE:
            while operators and operators[-1] != "(" and _PRECEDENCE[operators[-1]] >= _PRECEDENCE[token]:
                reduce()
            operators.append(token)
            want_operand = True
        else:
            return None
    if want_operand or "(" in operators:
        return None
    while operators:
        reduce()
    return operands[0]


def _chain(node: _Node) -> list[str] | None:
    """The chain computing ``node``, innermost number first, or None where no single chain does:
    each operation must take the running result and one number (either side of ``+`` and ``*``)."""
    outer: list[str] = []  # "op number" pieces, outermost first
    while isinstance(node, _Operation):
        if isinstance(node.right, int):
            outer += [str(node.right), node.op]
            node = node.left
        elif node.op in "+*" and isinstance(node.left, int):  # commutative: the running result goes first
            outer += [str(node.left), node.op]
            node = node.right
        else:
            return None
    return [str(node), *reversed(outer)]


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
