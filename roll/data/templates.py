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


class ObservationEncoder:
    """Token ids of environment observations for multi-turn rollouts, turn by turn (token-in/token-out).

    The first observation becomes the prompt; every later one becomes the ids appended after the
    policy's previous response. Earlier turns are never re-tokenised:
    - "plain": `tokenizer(first)` (with the tokenizer's special tokens, e.g. BOS), then each
      observation's text tokenised alone, without special tokens;
    - "chat": the first observation is a user message under the chat template with the generation
      prompt; each later one is the template's text for "end of the assistant turn + a new user
      message + the generation prompt", found as the difference between rendering a conversation
      with and without that message (the response ids already hold the assistant's end token).
    """

    # A fixed conversation the chat deltas are measured against; its content never reaches a batch.
    _PROBE = [{"role": "user", "content": "probe"}, {"role": "assistant", "content": "probe"}]

    def __init__(self, tokenizer, observation_format: str) -> None:
        if observation_format not in ("plain", "chat"):
            raise ValueError(f"observation_format={observation_format!r} is not one of plain|chat")
        if observation_format == "chat" and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "environment.observation_format=chat but the tokenizer has no chat_template; use plain"
            )
        self.tokenizer = tokenizer
        self.format = observation_format

    def first(self, observation: str) -> list[int]:
        """Prompt ids of the episode's first observation."""
        if self.format == "plain":
            return list(self.tokenizer(observation)["input_ids"])
        return encode_prompt(observation, self.tokenizer, "chat")

    def next(self, observation: str) -> list[int]:
        """Ids to append after a policy response: the observation (and, for chat, the turn markers)."""
        if self.format == "plain":
            return list(self.tokenizer(observation, add_special_tokens=False)["input_ids"])
        render = self.tokenizer.apply_chat_template
        base = render(self._PROBE, tokenize=False)
        message = {"role": "user", "content": observation}
        full = render([*self._PROBE, message], add_generation_prompt=True, tokenize=False)
        if not full.startswith(base):
            raise ValueError(
                "the chat template renders earlier turns differently once a turn is added; "
                "use environment.observation_format=plain"
            )
        # Keep what follows the assistant's text (its end-of-turn marker, newlines) minus the end token
        # itself, which the response ids already hold, then the new user turn and generation prompt.
        delta = full[base.rindex(self._PROBE[-1]["content"]) + len(self._PROBE[-1]["content"]) :]
        eos = self.tokenizer.eos_token
        if eos and delta.startswith(eos):
            delta = delta[len(eos) :]
        return list(self.tokenizer(delta, add_special_tokens=False)["input_ids"])
