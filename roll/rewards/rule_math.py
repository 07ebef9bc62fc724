"""`math_exact`: 1.0 when the response's final answer equals the reference answer, else 0.0.

The final answer is, in order of precedence: the last \\boxed{...}, the last <answer>...</answer>,
the text after the last "####", the text after the last "answer is", or else the last number.
Numbers compare by value ("1,000" == "1000", "3.0" == "3", "1/2" == "\\frac{1}{2}" == "0.5");
anything else compares as whitespace- and case-insensitive text.
"""

import re
from fractions import Fraction
from typing import Optional

from roll.rewards.registry import register_reward

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_LAST_NUMBER = re.compile(rf"(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?")
_LEADING_NUMBER = re.compile(rf"\$?\s*((?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?)(?![\w^])")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+)", re.IGNORECASE)
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_TEXT_WRAP = re.compile(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}")


def last_boxed(text: str) -> Optional[str]:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None if absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[begin:i]
        i += 1
    return None


def extract_final_answer(text: str) -> Optional[str]:
    """The final answer stated in `text` (see the module docstring for the precedence), or None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1]
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().split("\n", 1)[0]
    stated = _ANSWER_IS.findall(text)
    if stated:
        tail = stated[-1].strip()
        leading_number = _LEADING_NUMBER.match(tail)
        if leading_number:  # "answer is 42 apples" -> "42"
            return leading_number.group(1)
        # "The answer is x+1. Done." -> "x+1": stop at the first sentence end that is not a decimal point.
        return re.split(r"\.(?!\d)|\n", tail, maxsplit=1)[0]
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _clean(text: str) -> str:
    text = _TEXT_WRAP.sub(r"\1", text)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    for junk in ("\\$", "$", "\\!", "\\,", "\\left", "\\right", "\\%", "%"):
        text = text.replace(junk, "")
    return text.strip().rstrip(".").strip()


def to_number(text: str) -> Optional[Fraction]:
    """`text` as an exact number (integer, decimal, a/b, \\frac{a}{b}, thousands commas), or None."""
    text = _clean(text).replace(" ", "")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    frac = re.fullmatch(r"\(?(-?[\d.]+)\)?/\(?(-?[\d.]+)\)?", text)
    try:
        if frac:
            return Fraction(frac.group(1)) / Fraction(frac.group(2))
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str, reference: str) -> bool:
    """Equal as numbers when both parse as numbers, else as normalised text."""
    pred_num, ref_num = to_number(predicted), to_number(reference)
    if pred_num is not None and ref_num is not None:
        return pred_num == ref_num
    normalise = lambda s: re.sub(r"\s+", "", _clean(s)).lower()  # noqa: E731
    return normalise(predicted) == normalise(reference) != ""


def reference_answer(answer: str) -> str:
    """The reference's final answer: GSM8K-style "...#### 72" and \\boxed{} references are reduced to it."""
    if "####" in answer or "\\boxed" in answer:
        return extract_final_answer(answer) or answer
    return answer


@register_reward("math_exact")
def math_exact(response: str, answer: str) -> float:
    """1.0 if the final answer extracted from `response` equals `answer` (exactly, by value), else 0.0."""
    predicted = extract_final_answer(response)
    if predicted is None:
        return 0.0
    return 1.0 if answers_match(predicted, reference_answer(str(answer))) else 0.0
