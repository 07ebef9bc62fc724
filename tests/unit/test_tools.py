"""Tool calls (roll/envs/tools.py) and the bundled tools (roll/envs/bundled/tools.py).

parse_tool_call on well-formed, malformed and adversarial actions (never raising); ToolRunner's
error texts, truncation and stats with small test tools; the calculator against Python's own
arithmetic on hand-written cases and its refusals (names, calls, `9**9**9` refused at once); the
python tool end to end through the sandbox.
"""

import json
import time
from typing import Any

import pytest

from roll.envs.bundled.tools import Calculator, PythonTool
from roll.envs.registry import TOOLS, register_tool
from roll.envs.tools import (
    MAX_CALL_CHARS,
    Tool,
    ToolCall,
    ToolCallError,
    ToolRunner,
    parse_tool_call,
)


@register_tool("_test_echo")
class Echo:
    description = "_test_echo(text: str, times: int = 1): repeat the text"

    def __call__(self, text: str, times: int = 1) -> str:
        return text * times


@register_tool("_test_broken")
class Broken:
    description = "_test_broken(): always fails"

    def __call__(self) -> str:
        raise RuntimeError("disk on fire")


def _call(name: str, arguments: dict[str, Any] | str) -> str:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return f'<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


# --- parse_tool_call ---------------------------------------------------------------------------


def test_parse_well_formed_call_anywhere_in_the_action():
    action = (
        'Let me compute. <tool_call>{"name": "calculator", '
        '"arguments": {"expression": "3*(4+5)"}}</tool_call> and go on.'
    )
    assert parse_tool_call(action) == ToolCall(name="calculator", arguments={"expression": "3*(4+5)"})


def test_parse_uses_the_first_call_and_defaults_arguments():
    action = _call("a", {"x": 1}) + _call("b", {"y": 2})
    assert parse_tool_call(action) == ToolCall(name="a", arguments={"x": 1})
    assert parse_tool_call('<tool_call>{"name": "now"}</tool_call>') == ToolCall(name="now", arguments={})


@pytest.mark.parametrize("action", ["", "just an answer", "<answer>4</answer>", "</tool_call> stray close"])
def test_parse_without_a_tag_is_none(action):
    assert parse_tool_call(action) is None


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        ('<tool_call>{"name": "calculator", "arguments": {"expression": "1"}</tool_call>', "not valid JSON"),
        ("<tool_call>calculator(1+1)</tool_call>", "not valid JSON"),
        ("<tool_call></tool_call>", "not valid JSON"),
        ('<tool_call>{"arguments": {}}</tool_call>', '"name"'),
        ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', '"name"'),
        ('<tool_call>{"name": "  ", "arguments": {}}</tool_call>', '"name"'),
        (
            '<tool_call>{"name": "calculator", "arguments": ["1+1"]}</tool_call>',
            '"arguments" must be a JSON object',
        ),
        (
            '<tool_call>{"name": "calculator", "arguments": "1+1"}</tool_call>',
            '"arguments" must be a JSON object',
        ),
        ('<tool_call>["calculator", {}]</tool_call>', "must be a JSON object"),
        ('<tool_call>{"name": "calculator", "arguments": {}}', "not closed"),
        ('<tool_call><tool_call>{"name": "a"}</tool_call></tool_call>', "nested"),
        ('<tool_call>{"name": "a", "arguments": {"x": NaN}}</tool_call>', "not valid JSON"),
    ],
)
def test_parse_malformed_calls_are_errors(action, fragment):
    parsed = parse_tool_call(action)
    assert isinstance(parsed, ToolCallError)
    assert fragment in parsed.message


def test_parse_overlong_and_adversarial_inputs_never_raise():
    overlong = _call("echo", {"text": "x" * MAX_CALL_CHARS})
    parsed = parse_tool_call(overlong)
    assert isinstance(parsed, ToolCallError) and str(MAX_CALL_CHARS) in parsed.message
    deep = "<tool_call>" + "[" * 3000 + "]" * 3000 + "</tool_call>"  # JSON nesting past the recursion limit
    huge_number = '<tool_call>{"name": "a", "arguments": {"x": ' + "9" * 5000 + "}}</tool_call>"
    for action in (
        deep,
        huge_number,
        "<tool_call>" * 1000,
        "<tool_call>\x00\ud800</tool_call>",
        "x" * 10**6 + "<tool_call>",
    ):
        assert isinstance(parse_tool_call(action), ToolCallError)
    assert parse_tool_call(None) is None  # type: ignore[arg-type]


# --- ToolRunner --------------------------------------------------------------------------------


def _runner(**kwargs: Any) -> ToolRunner:
    return ToolRunner([("calculator", {}), ("_test_echo", {}), ("_test_broken", {})], **kwargs)


def _body(response: str) -> str:
    assert response.startswith("<tool_response>\n") and response.endswith("\n</tool_response>\n"), response
    return response[len("<tool_response>\n") : -len("\n</tool_response>\n")]


def test_runner_runs_the_call_and_wraps_the_result():
    runner = _runner()
    assert isinstance(runner.tools["calculator"], Tool)
    response = runner.run("thinking... " + _call("calculator", {"expression": "3*(4+5)"}))
    assert response == "<tool_response>\n27\n</tool_response>\n"
    assert runner.run("<answer>27</answer>") is None
    assert runner.stats["calls"] == 1 and runner.stats["errors"] == 0


def test_runner_describe_lists_format_and_tools():
    text = _runner().describe()
    assert "<tool_call>" in text and "<tool_response>" in text
    for line in ("- calculator(expression: str)", "- _test_echo(text: str", "- _test_broken()"):
        assert line in text


def test_runner_errors_become_responses():
    runner = _runner()
    cases = [
        (
            _call("search", {"q": "x"}),
            "error: unknown tool 'search'; the tools are: calculator, _test_echo, _test_broken",
        ),
        (_call("_test_echo", {"txt": "x"}), "error: bad arguments for _test_echo"),
        (_call("_test_echo", {"text": "x", "times": 2, "extra": 1}), "error: bad arguments for _test_echo"),
        (_call("_test_broken", {}), "error: tool _test_broken failed: RuntimeError: disk on fire"),
        ('<tool_call>{"name": "calculator"', "error: malformed tool call: <tool_call> is not closed"),
        (_call("calculator", {"expression": 5}), "error: expression must be a string"),
    ]
    for action, expected in cases:
        assert _body(runner.run(action)).startswith(expected), runner.run(action)
    assert runner.stats == {
        "calls": 6,
        "errors": 5,  # the calculator's own "error: ..." answer is a result, not a runner failure
        "malformed": 1,
        "unknown_tool": 1,
        "bad_arguments": 2,
        "tool_exceptions": 1,
        "truncated": 0,
    }


def test_runner_truncates_and_neutralises_tags():
    runner = _runner(max_output_chars=50)
    body = _body(runner.run(_call("_test_echo", {"text": "ab", "times": 100})))
    assert body.startswith("ab" * 25) and "[150 characters cut]" in body
    assert runner.stats["truncated"] == 1
    injected = _body(runner.run(_call("_test_echo", {"text": "</tool_response><tool_response>"})))
    assert "</tool_response>" not in injected and "<tool_response>" not in injected


def test_runner_rejects_bad_specs():
    with pytest.raises(ValueError, match="not registered"):
        ToolRunner([("no_such_tool", {})])
    with pytest.raises(ValueError, match="unknown arg"):
        ToolRunner([("calculator", {"digits": 3})])
    with pytest.raises(ValueError, match="used twice"):
        ToolRunner([("calculator", {}), ("calculator", {})])
    assert TOOLS.resolve("calculator") is Calculator and TOOLS.resolve("python") is PythonTool


# --- calculator --------------------------------------------------------------------------------

HAND_CASES = [
    "3*(4+5)",
    "1 + 2 * 3 - 4",
    "7 / 2",
    "7 // 2",
    "-7 // 2",
    "-7 % 3",
    "7 % -3",
    "2 ** 10",
    "2 ** 3 ** 2",
    "-2 ** 2",
    "(-2) ** 2",
    "2 ** -2",
    "0.1 + 0.2",
    "1.5 * 4",
    "10 / 4 * 3",
    "2 ** 100",
    "10 ** 999",
    "+-+5",
    "((1 + 2) * (3 + 4)) // 5",
    "1_000 * 3",
    "3.0 // 2",
    "0 ** 0",
    "2.5 ** 2",
]


@pytest.mark.parametrize("expression", HAND_CASES)
def test_calculator_matches_python(expression):
    # eval on these hand-written, trusted literals is the independent reference.
    assert Calculator()(expression=expression) == str(eval(expression))


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "x + 1",
        "(1).real",
        "abs(-1)",
        "[1, 2]",
        "1 < 2",
        "True + 1",
        "'a' * 3",
        "lambda: 1",
        "1j * 1j",
        "(-8) ** (1/3)",
        "1 / 0",
        "5 % 0",
        "1e400",
        "2.0 ** 10000",
        "9 ** 9 ** 9",
        "10 ** 1000",
        "(10 ** 600) * (10 ** 600)",
        "1" * 2000,
        "(" * 300 + "1" + ")" * 300,
        "",
    ],
)
def test_calculator_refuses(expression):
    start = time.monotonic()
    assert Calculator()(expression=expression).startswith("error: ")
    assert time.monotonic() - start < 1.0


def test_calculator_digit_bound_is_exact():
    calculator = Calculator(max_digits=10)
    assert calculator(expression="10 ** 9") == "1000000000"  # 10 digits
    assert calculator(expression="10 ** 10").startswith("error")  # 11 digits
    assert calculator(expression="99999 * 99999") == str(99999 * 99999)  # 10 digits
    assert calculator(expression="99999 * 999999").startswith("error")  # 11 digits
    assert calculator(expression="3 ** 20") == str(3**20) and calculator(expression="3 ** 21").startswith(
        "error"
    )


# --- python tool -------------------------------------------------------------------------------


def test_python_tool_reports_output_errors_and_timeouts():
    tool = PythonTool(timeout_s=1.0)
    assert tool(code="print(sum(range(10)))") == "45"
    failed = tool(code="print('partial')\n1 / 0")
    assert (
        failed.startswith("partial\n[stderr]\n")
        and "ZeroDivisionError" in failed
        and failed.endswith("[exit code 1]")
    )
    assert tool(code="while True: pass").endswith("[timed out after 1 s]")
    assert tool(code="x = 1") == "(no output; use print() to show results)"
    assert tool(code=3).startswith("error: code must be a string")  # type: ignore[arg-type]
    assert "starting processes is not allowed" in tool(code="import os; os.fork()")


def test_python_tool_through_the_runner():
    runner = ToolRunner([("python", {"timeout_s": 2.0})])
    code = "import math\\nprint(math.comb(10, 3))"
    assert runner.run(_call("python", f'{{"code": "{code}"}}')) == "<tool_response>\n120\n</tool_response>\n"
    with pytest.raises(ValueError, match="memory_mb"):
        PythonTool(memory_mb=8)
