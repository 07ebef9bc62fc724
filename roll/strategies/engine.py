"""The rollout engine protocol: token ids in, sampled token ids + log-probs out (native | SGLang).

A multi-turn (agentic) rollout is a sequence of ordinary requests: the next turn's prompt is the
previous prompt + response ids + the environment's tokens, so engines need no session state.

Log-prob convention (what `GeneratedSample.logprobs` holds): for a sampled token t at temperature
T > 0, `log_softmax(logits / T)[t]` over the FULL vocabulary, i.e. before top-k/top-p truncation
and without renormalising over the kept tokens. That is the distribution the trainer recomputes
(`roll.kernels.logprobs.logprobs_from_logits(logits, labels, temperature=T)`), so importance ratios
compare like with like. With temperature 0 (greedy) the unscaled `log_softmax(logits)[t]` is used.
"""

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Protocol, runtime_checkable

import torch

from roll.config.generation import GenerationConfig

FinishReason = Literal["stop", "length", "abort"]


@dataclass(kw_only=True, frozen=True)
class SamplingParams:
    """How one request's responses are sampled."""

    n: int = 1
    """Responses sampled for the prompt (they share one prefill)."""
    temperature: float = 1.0
    """Logits are divided by it before sampling; 0 means greedy (argmax)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of most likely tokens whose mass reaches top_p."""
    top_k: int = -1
    """Keep the k most likely tokens (applied before top_p); -1 disables."""
    max_new_tokens: int = 128
    """A response that reaches this many tokens ends with finish_reason "length"."""
    stop_token_ids: tuple[int, ...] = ()
    """Sampling one of these ends the response with finish_reason "stop"; the stop token is kept in
    the response (the policy must learn to emit it, so the trainer needs it)."""
    seed: int | None = None
    """Sampling seed of this request; None uses the engine's seed. Each sample's random stream derives
    from (seed, request_id, sample index), so reuse a request_id only to reproduce a rollout."""
    return_logprobs: bool = True
    """Return the per-token log-probs of the sampled tokens (see the module docstring)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n={self.n} must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p={self.top_p} must be in (0, 1]")
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"SamplingParams.top_k={self.top_k} must be -1 (disabled) or >= 1")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens={self.max_new_tokens} must be >= 1")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


@dataclass(kw_only=True)
class GenerationRequest:
    """One prompt to complete n times."""

    request_id: str
    """Unique among requests in flight; `abort` and the output refer to it."""
    prompt_ids: list[int]
    """Prompt token ids (no padding)."""
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(kw_only=True)
class GeneratedSample:
    """One sampled response."""

    token_ids: list[int]
    """Response token ids (T,), the stop token included when finish_reason is "stop"."""
    logprobs: list[float]
    """(T,) log-prob of each token under the sampling distribution; empty if not requested."""
    finish_reason: FinishReason


@dataclass(kw_only=True)
class GenerationOutput:
    """All samples of one request, in sample order."""

    request_id: str
    prompt_ids: list[int]
    samples: list[GeneratedSample]


@runtime_checkable
class RolloutEngine(Protocol):
    """What the actor_infer worker drives; the native (CPU) and SGLang (GPU) engines implement it."""

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Complete every request; outputs come back in request order."""
        ...

    async def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors (`model.layers.0.self_attn.q_proj.weight`, ...) into the served model."""
        ...

    async def abort(self, request_ids: Iterable[str]) -> None:
        """End in-flight requests now: their samples return with the tokens so far and finish_reason "abort"."""
        ...


def validate_requests(
    requests: Sequence[GenerationRequest], in_flight: Container[str], vocab_size: Optional[int]
) -> None:
    """Refuse a batch an engine cannot serve: a request id repeated or already in flight, an empty
    prompt, or (when `vocab_size` is known) prompt ids outside [0, vocab_size)."""
    seen: set[str] = set()
    for r in requests:
        if r.request_id in seen or r.request_id in in_flight:
            raise ValueError(f"request_id {r.request_id!r} is already in flight; request ids must be unique")
        seen.add(r.request_id)
        if not r.prompt_ids:
            raise ValueError(f"request {r.request_id!r} has an empty prompt; give at least one token id")
        if vocab_size is not None:
            bad = [t for t in r.prompt_ids if not 0 <= t < vocab_size]
            if bad:
                raise ValueError(
                    f"request {r.request_id!r} has prompt token ids {bad[:5]} outside the vocabulary "
                    f"[0, {vocab_size})"
                )


def sampling_params_from_config(
    cfg: GenerationConfig, *, extra_stop_token_ids: Iterable[int] = ()
) -> SamplingParams:
    """SamplingParams from the generation config.

    `extra_stop_token_ids` carries what needs the tokenizer: its EOS id(s) and the ids of the
    single-token `cfg.stop` strings (the engine works on token ids only).
    """
    stop_ids = dict.fromkeys([*cfg.stop_token_ids, *extra_stop_token_ids])
    return SamplingParams(
        n=cfg.num_samples,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        max_new_tokens=cfg.max_new_tokens,
        stop_token_ids=tuple(stop_ids),
        seed=cfg.seed,
    )


def request_cost(request: GenerationRequest) -> int:
    """Tokens a request may occupy in an engine: n x (prompt + max_new_tokens)."""
    sampling = request.sampling
    return sampling.n * (len(request.prompt_ids) + sampling.max_new_tokens)


def assign_to_replicas(costs: Sequence[int], outstanding: Sequence[int]) -> list[int]:
    """Replica index per request: largest request first onto the replica with the fewest outstanding
    plus assigned tokens (ties to the lowest index), so replicas end up evenly loaded."""
    load = list(outstanding)
    replica_of = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: -costs[i]):
        target = min(range(len(load)), key=lambda r: load[r])
        replica_of[index] = target
        load[target] += costs[index]
    return replica_of


def generate_on_replicas(infer: Any, requests: list[GenerationRequest]) -> list[GenerationOutput]:
    """Spread requests over the rollout replicas of `infer` (the actor_infer WorkerGroup), balancing
    the tokens each replica holds (its outstanding work plus this call's), block until done, and
    return the outputs in request order; a failed replica raises naming its rank."""
    workers = infer.workers
    outstanding = (
        infer.wait([worker.outstanding_tokens.remote() for worker in workers]) if len(workers) > 1 else [0]
    )
    replica_of = assign_to_replicas([request_cost(r) for r in requests], outstanding)
    refs, ranks, parts = [], [], []
    for rank, worker in enumerate(workers):
        part = [i for i, replica in enumerate(replica_of) if replica == rank]
        if part:
            refs.append(worker.generate.remote([requests[i] for i in part]))
            ranks.append(rank)
            parts.append(part)
    outputs: list[Optional[GenerationOutput]] = [None] * len(requests)
    for part, results in zip(parts, infer.wait(refs, ranks, call="generate")):
        for index, output in zip(part, results):
            outputs[index] = output
    return [output for output in outputs if output is not None]
