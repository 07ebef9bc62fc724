"""`countdown`: reach a target number with + - * / over given numbers, each used at most once.

The answer is a spec `{"target": 24, "numbers": [4, 6, 1, 3]}` (JSON or a Python dict literal;
"nums" is accepted for "numbers"). The equation is the last <answer>...</answer> of the response,
else its last non-empty line; a trailing "= value" is ignored. It is evaluated exactly (fractions)
by a small AST interpreter that admits only integer literals, + - * /, unary minus and parentheses:
never `eval`. Score: 1.0 when it equals the target, `format_score` when it is a well-formed
equation that misses or misuses numbers, 0.0 otherwise.
"""

import ast
import json
import operator
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from roll.rewards.registry import register_reward

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ALLOWED_CHARS = re.compile(r"[\d+\-*/()\s×÷]+")
_MAX_EQUATION_CHARS = 256
_BINARY_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


class UnsafeExpression(ValueError):
    """The expression uses syntax outside integer arithmetic with + - * / and parentheses."""


def parse_countdown_spec(answer: Any) -> tuple[int, list[int]]:
    """(target, numbers) from a dict or its JSON / Python-literal text; a clear error if malformed."""
    spec = answer
    if isinstance(answer, str):
        try:
            spec = json.loads(answer)
        except json.JSONDecodeError:
            spec = ast.literal_eval(answer)
    if not isinstance(spec, dict) or "target" not in spec or not ({"numbers", "nums"} & spec.keys()):
        raise ValueError(
            f"countdown answer {answer!r} must be a dict with 'target' and 'numbers' (or 'nums')"
        )
    numbers = spec["numbers"] if "numbers" in spec else spec["nums"]
    return int(spec["target"]), [int(n) for n in numbers]


def evaluate_arithmetic(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of an integer arithmetic expression and the integer literals it uses, in order.

    Raises UnsafeExpression for any other syntax (names, calls, attributes, powers, floats...)
    and ZeroDivisionError on division by zero.
    """
    if len(expression) > _MAX_EQUATION_CHARS:
        raise UnsafeExpression(f"expression longer than {_MAX_EQUATION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as err:
        raise UnsafeExpression(f"not an arithmetic expression: {err}") from None
    literals: list[int] = []

    def visit(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
            return _BINARY_OPS[type(node.op)](visit(node.left), visit(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = visit(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        raise UnsafeExpression(f"{type(node).__name__} is not allowed")

    return visit(tree.body), literals


def extract_equation(response: str) -> str:
    """The equation the response commits to: last <answer> tag, else the last non-empty line."""
    tags = _ANSWER_TAG.findall(response)
    text = tags[-1] if tags else next((ln for ln in reversed(response.splitlines()) if ln.strip()), "")
    return text.split("=", 1)[0].strip()


@register_reward("countdown")
def countdown(response: str, answer: str, format_score: float = 0.0, use_all_numbers: bool = False) -> float:
    """1.0 if the response's equation uses the given numbers (each at most once) to reach the target."""
    target, numbers = parse_countdown_spec(answer)
    equation = extract_equation(response)
    if not equation or not _ALLOWED_CHARS.fullmatch(equation):
        return 0.0
    try:
        value, used = evaluate_arithmetic(equation)
    except (UnsafeExpression, ZeroDivisionError):
        return 0.0
    used_counts, available = Counter(used), Counter(numbers)
    if any(used_counts[n] > available[n] for n in used_counts):
        return format_score
    if use_all_numbers and used_counts != available:
        return format_score
    return 1.0 if value == target else format_score
