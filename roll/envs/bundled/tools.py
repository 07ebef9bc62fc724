"""The bundled tools: `calculator` (safe arithmetic) and `python` (code run in roll/envs/sandbox.py).

    tools:
      - {type: calculator, args: {max_digits: 1000}}
      - {type: python, args: {timeout_s: 5.0, memory_mb: 512}}

Both return text and report bad input as an "error: ..." text rather than raising (the call format
and the runner are in roll/envs/tools.py).
"""

import ast
import math
import operator
from collections.abc import Callable

from roll.envs.registry import register_tool
from roll.envs.sandbox import SandboxResult, run_python, sandbox_capabilities

_LOG10_2 = math.log10(2)

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message is shown to the policy."""


@register_tool("calculator")
class Calculator:
    """Arithmetic on int and float literals with Python's semantics (7/2 = 3.5, 7//2 = 3, -7 % 3 = 2).

    Only numbers, + - * / // % **, unary + and -, and parentheses; no names, calls or attributes.
    Integer results and operands are bounded to `max_digits` digits *before* an operation runs, so
    `9**9**9` is refused at once instead of hanging; float overflow is an error, not inf.
    """

    description = (
        "calculator(expression: str): evaluate arithmetic with + - * / // % ** and parentheses, "
        'e.g. "3*(4+5)"'
    )

    def __init__(self, max_digits: int = 1000, max_chars: int = 1000) -> None:
        if max_digits < 1 or max_chars < 1:
            raise ValueError(f"calculator: max_digits={max_digits} and max_chars={max_chars} must be >= 1")
        self.max_digits = max_digits
        self.max_chars = max_chars

    def __call__(self, expression: str) -> str:
        if not isinstance(expression, str):
            return f"error: expression must be a string, got {type(expression).__name__}"
        if len(expression) > self.max_chars:
            return f"error: the expression has {len(expression)} characters; the limit is {self.max_chars}"
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
            return f"error: not an arithmetic expression ({type(err).__name__})"
        try:
            value = self._eval(tree.body)
        except CalculatorError as err:
            return f"error: {err}"
        except ZeroDivisionError:
            return "error: division by zero"
        except (OverflowError, RecursionError):
            return "error: the result is too large"
        return str(value)

    def _eval(self, node: ast.expr) -> int | float:
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CalculatorError(f"only numbers are allowed, not {value!r}")
            return self._checked(value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self._eval(node.operand)
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._eval(node.left), self._eval(node.right)
            self._check_cost(node.op, left, right)
            return self._checked(_BINARY[type(node.op)](left, right))
        raise CalculatorError(
            f"{type(node).__name__} is not allowed; use numbers, + - * / // % ** and parentheses"
        )

    def _check_cost(self, op: ast.operator, left: float, right: float) -> None:
        # Big-int pow and multiplication are what can take unbounded time and memory: refuse them
        # when the result surely has too many digits; near the bound, compute and let _checked decide.
        if not (isinstance(left, int) and isinstance(right, int)):
            return
        if isinstance(op, ast.Pow):
            too_big = abs(left) > 1 and right > 0 and right * math.log10(abs(left)) > self.max_digits + 1
        else:  # a product has at least (digits of left) + (digits of right) - 1 digits
            too_big = isinstance(op, ast.Mult) and _digits(left) + _digits(right) - 3 > self.max_digits
        if too_big:
            raise CalculatorError(f"the result would have more than {self.max_digits} digits")

    def _checked(self, value: float) -> int | float:
        if isinstance(value, complex):
            raise CalculatorError("the result is not a real number")
        if isinstance(value, float) and not math.isfinite(value):
            raise CalculatorError("the result is too large (not a finite number)")
        if isinstance(value, int) and _has_more_digits(value, self.max_digits):
            raise CalculatorError(f"the result has more than {self.max_digits} digits")
        return value


def _digits(value: int) -> int:
    """Upper bound on the decimal digits of `value`, from its bit length (no str conversion)."""
    return int(abs(value).bit_length() * _LOG10_2) + 1


def _has_more_digits(value: int, max_digits: int) -> bool:
    if _digits(value) <= max_digits:
        return False
    # Near the bound the estimate can be one too high; the exact count is cheap at that size.
    return _digits(value) > max_digits + 1 or len(str(abs(value))) > max_digits


@register_tool("python")
class PythonTool:
    """Runs the policy's code with `run_python` (roll/envs/sandbox.py) and returns what it printed,
    followed by its stderr and how it ended when that was not a clean exit."""

    description = (
        "python(code: str): run a Python 3 script (standard library only, no network, files only in its "
        "working directory, a few seconds); returns what it prints"
    )

    def __init__(
        self,
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        cpu_time_s: int = 5,
        max_file_mb: int = 16,
        max_output_chars: int = 2000,
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.cpu_time_s = cpu_time_s
        self.max_file_mb = max_file_mb
        self.max_output_chars = max_output_chars
        # Fails here, naming the field, when a limit is invalid; and shows the sandbox starts with them.
        probe = self._run("pass")
        if not probe.ok:
            raise RuntimeError(f"python tool: the sandbox cannot run 'pass' with these limits: {probe}")
        self.layers = sandbox_capabilities()  # logged once per process

    def _run(self, code: str) -> SandboxResult:
        return run_python(
            code,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            cpu_time_s=self.cpu_time_s,
            max_file_mb=self.max_file_mb,
            max_output_chars=self.max_output_chars,
        )

    def __call__(self, code: str) -> str:
        if not isinstance(code, str):
            return f"error: code must be a string, got {type(code).__name__}"
        result = self._run(code)
        parts = [result.stdout]
        if result.stderr:
            parts.append(f"[stderr]\n{result.stderr}")
        if result.timed_out:
            parts.append(f"[timed out after {self.timeout_s:g} s]")
        elif result.killed_by == "SIGXCPU":
            parts.append(f"[killed: CPU time limit of {self.cpu_time_s} s]")
        elif result.killed_by is not None:
            parts.append(f"[killed by {result.killed_by}]")
        elif result.exit_code != 0:
            parts.append(f"[exit code {result.exit_code}]")
        text = "\n".join(part.rstrip("\n") for part in parts if part)
        return text if text else "(no output; use print() to show results)"
