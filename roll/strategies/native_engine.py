"""The native rollout engine: the RolloutEngine protocol on the plain-torch decoder (CPU, tiny models).

Scheduling is static batching: requests are packed in arrival order into chunks of at most
`max_batch_size` sample rows. A chunk prefills every prompt once (right-padded, batched), copies each
prompt's KV cache to its n sample rows, then decodes all rows in lock-step, dropping rows from the
batch as they finish. Compute runs in a worker thread so `abort` and other coroutines interleave.

Reproducibility: every sample draws its uniforms from its own torch.Generator seeded by
hash(seed, request_id, sample index), one draw per generated token, so a sample's tokens do not
depend on which other requests share the batch (up to float rounding of batched matmuls).
"""

import asyncio
import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from roll.models.native import KVCache, load_native_model
from roll.models.native.sampling import sample_next_tokens
from roll.strategies.engine import (
    FinishReason,
    GeneratedSample,
    GenerationOutput,
    GenerationRequest,
    validate_requests,
)
from roll.utils.logging import get_logger

logger = get_logger(__name__)


def sample_seed(seed: int, request_id: str, sample_index: int) -> int:
    """A 63-bit generator seed that depends only on the request's seed, its id and the sample index."""
    digest = hashlib.sha256(f"{seed}:{request_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class _Row:
    """Decoding state of one sample (one batch row)."""

    request: int
    """Index of its request in the chunk."""
    generator: torch.Generator
    stop_ids: frozenset[int]
    max_new_tokens: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    def final_reason(self) -> FinishReason:
        """Why the row stopped; the decode loop returns only once every row has a reason."""
        assert self.finish_reason is not None, "row is still decoding"
        return self.finish_reason


class NativeEngine:
    """RolloutEngine on a NativeCausalLM loaded from an HF checkpoint directory."""

    def __init__(
        self,
        model_dir: str,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"NativeEngine max_batch_size={max_batch_size} must be >= 1")
        self.model = load_native_model(model_dir, device=device, dtype=dtype)
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        self.seed = seed
        # Counters since start: prompt tokens prefilled, prefill forwards, decode forwards, tokens returned.
        self.stats = {"prefill_tokens": 0, "prefill_calls": 0, "decode_steps": 0, "generated_tokens": 0}
        # One batch (or weight update) at a time; abort bookkeeping is shared with the compute thread.
        self._model_lock = asyncio.Lock()
        self._abort_lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._aborted: set[str] = set()

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Complete every request (n samples each); outputs come back in request order."""
        validate_requests(requests, self._in_flight, self.model.config.vocab_size)
        ids = {r.request_id for r in requests}
        with self._abort_lock:
            self._in_flight |= ids
        try:
            async with self._model_lock:
                return await asyncio.to_thread(self._generate_all, list(requests))
        finally:
            with self._abort_lock:
                self._in_flight -= ids
                self._aborted -= ids

    async def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the model, between batches (waits for the running one)."""
        async with self._model_lock:
            copied = await asyncio.to_thread(self.model.copy_named_tensors, named_tensors)
        logger.info("native engine: updated %d weights", len(copied))

    async def abort(self, request_ids: Iterable[str]) -> None:
        """End these in-flight (or queued) requests at the next decode step; unknown ids are ignored."""
        with self._abort_lock:
            self._aborted |= self._in_flight & set(request_ids)

    def _generate_all(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        outputs: list[GenerationOutput] = []
        chunk: list[GenerationRequest] = []
        for request in requests:
            rows = sum(r.sampling.n for r in chunk)
            if chunk and rows + request.sampling.n > self.max_batch_size:
                outputs += self._generate_chunk(chunk)
                chunk = []
            chunk.append(request)
        if chunk:
            outputs += self._generate_chunk(chunk)
        return outputs

    def _aborted_in(self, requests: list[GenerationRequest]) -> set[int]:
        with self._abort_lock:
            return {i for i, r in enumerate(requests) if r.request_id in self._aborted}

    @torch.inference_mode()
    def _generate_chunk(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        rows = [
            _Row(
                request=i,
                generator=torch.Generator().manual_seed(
                    sample_seed(self.seed if r.sampling.seed is None else r.sampling.seed, r.request_id, j)
                ),
                stop_ids=frozenset(r.sampling.stop_token_ids),
                max_new_tokens=r.sampling.max_new_tokens,
            )
            for i, r in enumerate(requests)
            for j in range(r.sampling.n)
        ]
        cache, logits, positions = self._prefill(requests)
        live = list(range(len(rows)))  # indices into `rows` of the batch rows, in batch order
        params = [requests[rows[i].request].sampling for i in live]
        device = self.device
        temperature = torch.tensor([p.temperature for p in params], device=device)
        top_k = torch.tensor([p.top_k for p in params], device=device)
        top_p = torch.tensor([p.top_p for p in params], device=device)
        while True:
            aborted = self._aborted_in(requests)
            uniforms = torch.cat([torch.rand(1, generator=rows[i].generator) for i in live]).to(device)
            tokens, logprobs = sample_next_tokens(logits, temperature, top_k, top_p, uniforms)
            for i, token, logprob in zip(live, tokens.tolist(), logprobs.tolist()):
                row = rows[i]
                if row.request in aborted:
                    row.finish_reason = "abort"
                    continue
                row.tokens.append(token)
                row.logprobs.append(logprob)
                self.stats["generated_tokens"] += 1
                if token in row.stop_ids:
                    row.finish_reason = "stop"
                elif len(row.tokens) >= row.max_new_tokens:
                    row.finish_reason = "length"
            keep = [b for b, i in enumerate(live) if rows[i].finish_reason is None]
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=device)
                cache.select_rows(index)
                live = [live[b] for b in keep]
                tokens, positions = tokens[index], positions[index]
                temperature, top_k, top_p = temperature[index], top_k[index], top_p[index]
            logits = self.model(tokens[:, None], positions[:, None], cache)[:, 0]
            positions = positions + 1
            self.stats["decode_steps"] += 1
        return [
            GenerationOutput(
                request_id=r.request_id,
                prompt_ids=list(r.prompt_ids),
                samples=[
                    GeneratedSample(
                        token_ids=row.tokens,
                        logprobs=row.logprobs if r.sampling.return_logprobs else [],
                        finish_reason=row.final_reason(),
                    )
                    for row in rows
                    if row.request == i
                ],
            )
            for i, r in enumerate(requests)
        ]

    def _prefill(self, requests: list[GenerationRequest]) -> tuple[KVCache, torch.Tensor, torch.Tensor]:
        """Run every prompt once; return the cache, next-token logits and next positions, one row per sample."""
        lengths = torch.tensor([len(r.prompt_ids) for r in requests], device=self.device)
        width = int(lengths.max())
        input_ids = torch.zeros(len(requests), width, dtype=torch.long, device=self.device)
        for i, r in enumerate(requests):
            input_ids[i, : len(r.prompt_ids)] = torch.tensor(r.prompt_ids)
        capacity = max(len(r.prompt_ids) + r.sampling.max_new_tokens for r in requests)
        cache = KVCache(
            self.model.config, len(requests), capacity, self.device, self.model.lm_head.weight.dtype
        )
        positions = torch.arange(width, device=self.device).expand(len(requests), width)
        logits = self.model(input_ids, positions, cache, logits_at=lengths - 1)
        self.stats["prefill_tokens"] += int(lengths.sum())
        self.stats["prefill_calls"] += 1
        # Each prompt's cache, logits and next position are shared by its n samples.
        per_sample = torch.repeat_interleave(
            torch.arange(len(requests), device=self.device),
            torch.tensor([r.sampling.n for r in requests], device=self.device),
        )
        cache.select_rows(per_sample)
        return cache, logits[per_sample], lengths[per_sample]
