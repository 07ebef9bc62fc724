"""Prompt templates: "plain" tokenises the prompt text as is; "chat" renders the tokenizer's chat
template with the generation prompt appended (a text prompt becomes one user message)."""

from typing import Any

TEMPLATES = ("plain", "chat")


class PromptFormatError(ValueError):
    """A row's prompt does not fit the template (wrong type, empty messages): the row is skipped."""


def encode_prompt(prompt: Any, tokenizer, template: str) -> list[int]:
    """Token ids of `prompt` (text, or a list of {role, content} messages for "chat") under `template`."""
    if template == "plain":
        if not isinstance(prompt, str):
            raise PromptFormatError(
                f"template=plain needs a text prompt, got {type(prompt).__name__}; use data.template=chat"
            )
        return list(tokenizer(prompt)["input_ids"])
    if template == "chat":
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and "content" in m for m in messages
        ):
            raise PromptFormatError("template=chat needs a text prompt or a list of {role, content} messages")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "data.template=chat but the tokenizer has no chat_template; use data.template=plain"
            )
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The rendered template already holds any BOS it wants; adding special tokens would double it.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    raise ValueError(f"data.template={template!r} is not one of {'|'.join(TEMPLATES)}")
