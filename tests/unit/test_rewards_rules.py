"""Rule rewards on hand-written cases: math_exact answer extraction and normalisation, countdown
(number reuse, unsafe expressions), format, and the registry's errors."""

import pytest

from roll.rewards import get_reward_fn, register_reward, registered_rewards
from roll.rewards.rule_countdown import UnsafeExpression, evaluate_arithmetic

math_exact = get_reward_fn("math_exact")
countdown = get_reward_fn("countdown")
format_reward = get_reward_fn("format")


@pytest.mark.parametrize(
    "response, answer, expected",
    [
        ("so the total is \\boxed{1,000}", "1000", 1.0),
        ("\\boxed{\\frac{1}{2}} is it, not 7", "0.5", 1.0),
        ("\\boxed{\\dfrac{3}{4}}", "3/4", 1.0),
        ("nested \\boxed{\\text{x}^{2}}", "x^{2}", 1.0),
        ("The answer is 3.0.", "3", 1.0),
        ("The answer is: $42$. Then 17 more words", "42", 1.0),
        ("the answer is 2.5 apples", "5/2", 1.0),
        ("the answer is x^2 + 1. So", "x^2+1", 1.0),
        ("the answer is 2^{10}", "1024", 0.0),
        ("work...\n#### 72", "72", 1.0),
        ("blah\n#### 5", "Janet sells ... so 2+3=5.\n#### 5", 1.0),
        ("<answer>-4</answer> and later 7", "-4", 1.0),
        ("12 apples, then 13 pears", "13", 1.0),
        ("12 apples, then 13 pears", "12", 0.0),
        ("we get 1,234,567 in total", "1234567", 1.0),
        ("x = 1/2", "0.5", 1.0),
        ("\\boxed{x + 1}", "X+1", 1.0),
        ("\\boxed{3}", "4", 0.0),
        ("no number here", "1", 0.0),
        ("", "0", 0.0),
        ("\\boxed{}", "", 0.0),
        ("47<eos>", "47", 1.0),
        ("0.30000000000000004", "0.3", 0.0),
    ],
)
def test_math_exact(response, answer, expected):
    assert math_exact(response, answer) == expected


def test_math_exact_unbalanced_boxed_falls_back_to_last_number():
    assert math_exact("\\boxed{12 and then 14", "14") == 1.0


SPEC = '{"target": 24, "numbers": [4, 6, 1, 3]}'


@pytest.mark.parametrize(
    "response, answer, expected",
    [
        ("<answer>4*6*1</answer>", SPEC, 1.0),
        ("<answer>(6-3+1)*6</answer>", SPEC, 0.0),  # 6 used twice
        ("<answer>6*4</answer>", "{'target': 24, 'nums': [4, 6, 1, 3]}", 1.0),  # Python literal, 'nums'
        ("reasoning...\n4 * 6 = 24", SPEC, 1.0),  # no tag: last line, the '= 24' part ignored
        ("<answer>4*6/(1-1)</answer>", SPEC, 0.0),  # division by zero
        ("<answer>4+6+1+3</answer>", SPEC, 0.0),  # 14
        ("<answer>(3-1)*6*4/4</answer>", SPEC, 0.0),  # 4 used twice
        ("<answer>6/(1-3/4)</answer>", SPEC, 1.0),  # exact fractions: 6 / (1/4) = 24
        ("<answer>(4/(1-3/6))*3</answer>", SPEC, 0.0),  # = 24 but 3 used twice
        ("<answer>4*6*1</answer><answer>1</answer>", SPEC, 0.0),  # the last tag counts
    ],
)
def test_countdown(response, answer, expected):
    assert countdown(response, answer) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "(lambda: 24)()",
        "2**5",
        "4*6 if 1 else 0",
        "[24][0]",
        "24.0",
        "x*6",
        "(" * 400 + "24" + ")" * 400,
    ],
)
def test_countdown_rejects_unsafe_expressions(expression):
    with pytest.raises(UnsafeExpression):
        evaluate_arithmetic(expression)
    assert countdown(f"<answer>{expression}</answer>", SPEC) == 0.0
    assert countdown(f"<answer>{expression}</answer>", SPEC, format_score=0.1) == 0.0


def test_countdown_evaluator_values_and_literals():
    value, used = evaluate_arithmetic("-(3 - 10) * 2 / 4 + 1")
    assert value == (-(3 - 10) * 2) / 4 + 1 and used == [3, 10, 2, 4, 1]


def test_countdown_format_score_and_use_all():
    assert countdown("<answer>4+6</answer>", SPEC, format_score=0.1) == 0.1  # well formed, wrong value
    assert countdown("<answer>6*4*6</answer>", SPEC, format_score=0.1) == 0.1  # reuse
    assert countdown("<answer>6*4</answer>", SPEC, use_all_numbers=True) == 0.0
    assert countdown("<answer>6/(1-3/4)</answer>", SPEC, use_all_numbers=True) == 1.0


def test_countdown_malformed_spec_is_an_error():
    with pytest.raises(ValueError, match="target"):
        countdown("<answer>1</answer>", '{"numbers": [1]}')


def test_format_reward():
    assert format_reward("<think>x</think><answer>5</answer>", "") == 1.0
    assert format_reward("<answer></answer>", "") == 0.0
    assert format_reward("answer: 5", "") == 0.0
    assert format_reward("<answer>\n5\n</answer>", "") == 1.0  # DOTALL
    assert format_reward("x <answer>5</answer>", "", pattern=r"<answer>\d+</answer>", full_match=True) == 0.0
    assert format_reward("<answer>5</answer>", "", pattern=r"<answer>\d+</answer>", full_match=True) == 1.0
    with pytest.raises(ValueError, match="not a valid regex"):
        format_reward("x", "", pattern="(")


def test_registry_lists_and_suggests():
    assert {"math_exact", "countdown", "format"} <= set(registered_rewards())
    with pytest.raises(ValueError, match="Did you mean 'countdown'.*Registered: .*format"):
        get_reward_fn("countdwn")


def test_registry_rejects_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):
        register_reward("math_exact")(lambda response, answer: 0.0)
