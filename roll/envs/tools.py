"""Tool calls in a policy's action, and the runner that executes them for the multi-turn rollout.

Format. Anywhere in its action the policy writes one JSON object between tags:

    <tool_call>{"name": "calculator", "arguments": {"expression": "3*(4+5)"}}</tool_call>

Only the first <tool_call> of an action is used; text around it is ignored. `arguments` is an
object of keyword arguments (omitted means none). The result comes back as the next observation:

    <tool_response>
    27
    </tool_response>

Errors never raise: a malformed call (bad JSON, no or invalid "name", non-object "arguments",
unclosed or nested tag, a call over 8000 characters), an unknown tool, arguments the tool does not
accept, and an exception inside the tool all become an "error: ..." text inside <tool_response>,
so the policy sees what went wrong and the episode goes on.

A tool is any class registered with `@register_tool("name")` (roll/envs/registry.py), whose
instances have a one-line `description` (with the arguments) and return text from
`__call__(**arguments)`; the bundled ones are in roll/envs/bundled/tools.py.
"""

import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from roll.envs.registry import TOOLS
from roll.utils.logging import get_logger

logger = get_logger(__name__)

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"
MAX_CALL_CHARS = 8000
"""Longest accepted text between <tool_call> and </tool_call>."""


@dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: the tool's name and its keyword arguments."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallError:
    """Why a <tool_call> could not be parsed; `message` is a short clause shown to the policy."""

    message: str


@runtime_checkable
class Tool(Protocol):
    """A tool the policy may call: `description` is one line naming its arguments."""

    description: str

    def __call__(self, **arguments: Any) -> str:
        """Run the tool; return its result (or an "error: ..." text) for the policy."""
        ...


def parse_tool_call(action: str) -> ToolCall | ToolCallError | None:
    """The first tool call in `action`; None without a <tool_call> tag; never raises."""
    if not isinstance(action, str):
        return None
    start = action.find(CALL_OPEN)
    if start < 0:
        return None
    body_start = start + len(CALL_OPEN)
    end = action.find(CALL_CLOSE, body_start)
    if end < 0:
        return ToolCallError(f"{CALL_OPEN} is not closed with {CALL_CLOSE}")
    body = action[body_start:end]
    if len(body) > MAX_CALL_CHARS:
        return ToolCallError(f"the tool call has {len(body)} characters; the limit is {MAX_CALL_CHARS}")
    if CALL_OPEN in body:
        return ToolCallError(f"nested {CALL_OPEN} tags")
    try:
        call = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        return ToolCallError(f"the tool call is not valid JSON ({_one_line(err)})")
    if not isinstance(call, dict):
        return ToolCallError(
            'the tool call must be a JSON object {"name": ..., "arguments": {...}}, '
            f"got {type(call).__name__}"
        )
    name = call.get("name")
    if not isinstance(name, str) or not name.strip():
        return ToolCallError('the tool call needs a "name": a non-empty string')
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        return ToolCallError(f'"arguments" must be a JSON object, got {type(arguments).__name__}')
    return ToolCall(name=name.strip(), arguments=arguments)


class ToolRunner:
    """The tools of one env spec, built from `(type, args)` specs; runs the tool call of an action.

    A tool is called by its `name` attribute when it has one, else by its registry name (for an
    import path "pkg.mod:Class", by "Class"). `stats` counts calls and each kind of failure.
    """

    def __init__(
        self, specs: Sequence[tuple[str, Mapping[str, Any]]], *, max_output_chars: int = 2000
    ) -> None:
        if max_output_chars < 1:
            raise ValueError(f"ToolRunner: max_output_chars={max_output_chars} must be >= 1")
        self.max_output_chars = max_output_chars
        self.tools: dict[str, Tool] = {}
        self._signatures: dict[str, inspect.Signature | None] = {}
        for type_name, args in specs:
            tool = TOOLS.build(type_name, dict(args or {}))
            name = getattr(tool, "name", None) or type_name.rpartition(":")[2]
            description = getattr(tool, "description", None)
            if not isinstance(description, str) or not description.strip() or "\n" in description.strip():
                raise ValueError(
                    f"tool {type_name!r}: `description` must be a one-line str naming the arguments, "
                    f"got {description!r}"
                )
            if name in self.tools:
                raise ValueError(
                    f"tool name {name!r} is used twice ({type_name!r} and an earlier spec); "
                    "give one tool a `name` attribute"
                )
            self.tools[name] = tool
            try:
                self._signatures[name] = inspect.signature(tool)
            except (TypeError, ValueError):
                self._signatures[name] = None
        self.stats: dict[str, int] = {
            "calls": 0,
            "errors": 0,
            "malformed": 0,
            "unknown_tool": 0,
            "bad_arguments": 0,
            "tool_exceptions": 0,
            "truncated": 0,
        }
        self._logged_failures: set[tuple[str, str]] = set()

    def describe(self) -> str:
        """Instructions for the policy: the call format and one line per tool."""
        lines = [
            "",
            "You can call a tool by writing, anywhere in your reply:",
            f'{CALL_OPEN}{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}{CALL_CLOSE}',
            "Only the first call of a reply runs; its result comes back as "
            f"{RESPONSE_OPEN}...{RESPONSE_CLOSE}.",
            "Tools:",
            *(f"- {_usage(name, tool.description.strip())}" for name, tool in self.tools.items()),
        ]
        return "\n".join(lines) + "\n"

    def run(self, action: str) -> str | None:
        """The observation answering the tool call in `action`; None when it has none. Never raises."""
        call = parse_tool_call(action)
        if call is None:
            return None
        self.stats["calls"] += 1
        if isinstance(call, ToolCallError):
            return self._failure("malformed", f"malformed tool call: {call.message}")
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "(none)"
            return self._failure("unknown_tool", f"unknown tool {call.name!r}; the tools are: {known}")
        signature = self._signatures[call.name]
        if signature is not None:
            try:
                signature.bind(**call.arguments)
            except TypeError as err:
                return self._failure(
                    "bad_arguments",
                    f"bad arguments for {call.name}: {err}. Usage: {tool.description.strip()}",
                )
        try:
            output = tool(**call.arguments)
            text = output if isinstance(output, str) else str(output)
        except Exception as err:  # a tool's failure is the policy's observation, never the rollout's crash
            key = (call.name, type(err).__name__)
            if key not in self._logged_failures:
                self._logged_failures.add(key)
                logger.warning(
                    "tool %r raised %s: %s (logged once per tool and type)", call.name, key[1], err
                )
            return self._failure("tool_exceptions", f"tool {call.name} failed: {type(err).__name__}: {err}")
        return self._respond(text)

    def _failure(self, kind: str, message: str) -> str:
        self.stats[kind] += 1
        self.stats["errors"] += 1
        return self._respond(f"error: {message}")

    def _respond(self, text: str) -> str:
        if len(text) > self.max_output_chars:
            self.stats["truncated"] += 1
            cut = len(text) - self.max_output_chars
            text = f"{text[: self.max_output_chars]}\n...[{cut} characters cut]"
        # The output must not close the response early or fake a new one.
        text = text.replace(RESPONSE_CLOSE, "</tool_response >").replace(RESPONSE_OPEN, "<tool_response >")
        return f"{RESPONSE_OPEN}\n{text.rstrip(chr(10))}\n{RESPONSE_CLOSE}\n"


def _usage(name: str, description: str) -> str:
    # A description that starts with its own signature ("calculator(expression: str): ...") needs no name.
    return description if description.startswith(f"{name}(") else f"{name}: {description}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _one_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]
