"""The SGLang rollout engine: the RolloutEngine protocol on SGLang's offline `Engine` (GPU machines).

Supported release: sglang 0.5.23 (`SGLANG_VERSION`). Every sglang function, method, class and
keyword this module touches is listed once in `SGLANG_API`; the code reaches sglang only through
that table (`_call`, `_new`, `_checked`), and `tests/unit/test_sglang_conformance.py` checks each
entry against the release's source with `ast`, on CPU. Facts below cite that release's files.

Construction. `Engine(**kwargs)` builds `ServerArgs(**kwargs)` (srt/entrypoints/engine.py:
Engine.__init__); ServerArgs is a msgspec Struct assembled from srt/arg_groups/fields/*.py
(srt/server_args.py). We set model_path, tp_size, ep_size, dtype, random_seed and
skip_tokenizer_init=True; `strategy.args` is passed through after `check_sglang_args`.

Generation. `Engine.async_generate(input_ids=[[...]], sampling_params=[{...}], return_logprob=[...],
rid=[...])` returns, for a batch, one dict per row in row order (srt/managers/tokenizer_manager.py:
TokenizerManager._handle_batch_request / _collect_batch_responses / _handle_batch_output):
`{"output_ids": [...], "meta_info": {"id": rid, "finish_reason": {...}, "prompt_tokens": int,
"completion_tokens": int, "output_token_logprobs": [(logprob, token_id, None), ...], ...}}`; the
tuples come from TokenizerManager.detokenize_logprob_tokens (text None without a tokenizer).
- finish_reason is `to_json()` of srt/managers/schedule_batch.py: FINISH_MATCHED_TOKEN
  {"type": "stop", "matched": id}, FINISH_LENGTH {"type": "length", "length": n}, FINISH_ABORT
  {"type": "abort", "message", "status_code", "err_type"}; a request aborted while queued gets
  {"type": "abort", "message"} (TokenizerManager._handle_abort_req). A "stop" whose `matched` is a
  string is SGLang's NaN / out-of-vocabulary guard (Req._check_vocab_boundary_finish): we send no stop
  strings, so we report it as "abort".
- The stop token stays in output_ids (Req.output_ids_through_stop); a stop token beats the length
  cap (Req.update_finish_state), as in the native engine. SGLang also stops on the model's own EOS
  ids (Req._check_token_based_finish: eos_token_ids from config/generation_config) even when they
  are not in stop_token_ids; `ignore_eos` would disable stop_token_ids as well, so it is not used.
- n samples: sampling_params["n"] > 1 re-issues each sample under a fresh random rid with one
  shared sampling_seed (TokenizerManager._handle_batch_request), so those samples could not be
  aborted by id and would draw identical seeded streams. We send each prompt n times instead, each
  row with its own rid and seed; the radix cache shares the prompt's KV across the rows.
- Seeds: SamplingParams.sampling_seed is honoured only with `enable_deterministic_inference: true`
  (srt/sampling/sampling_batch_info.py: SamplingBatchInfo.from_schedule_batch); otherwise rows
  draw from the scheduler's RNG seeded by random_seed and a rollout is not reproducible per request.
- temperature 0 becomes temperature 1 + top_k 1 (srt/sampling/sampling_params.py:
  SamplingParams.__post_init__); top_k -1 means the whole vocabulary.

Abort. TokenizerManager.abort_request(rid) sends an AbortReq for a registered rid; the scheduler
matches rids by prefix (srt/managers/scheduler.py: Scheduler.abort_request), hence our rids end in
a random uuid. A running row ends after one more decode step with FINISH_ABORT and returns its
tokens so far. Best effort: a row not yet handed to the scheduler may still complete.

Weights and memory. Engine's synchronous wrappers (update_weights_from_tensor, ...) run
`self.loop.run_until_complete(...)`, which cannot run inside the Ray actor's running event loop.
So, like verl's AsyncEngine, we await the TokenizerManager coroutines they wrap
(srt/managers/tokenizer_control_mixin.py: update_weights_from_tensor, init_weights_update_group,
update_weights_from_distributed, release_memory_occupation, resume_memory_occupation) with the
request structs of srt/managers/io_struct.py, serialising the named tensors once per TP rank with
MultiprocessingSerializer as Engine._serialize_tensors_per_rank does. Those coroutines take the
model-update writer lock, so a weight update waits for in-flight generation. TokenizerManager binds
its receive loop to the first event loop that uses it (auto_create_handle_loop): all methods of one
SGLangEngine must be awaited on one loop.

Log-probs (compare the convention in engine.py). srt/layers/sampler.py: Sampler.forward, standard
path: `logits.div_(sampling_info.temperatures)`, `probs = softmax(logits)`, `_sample_from_probs`
applies top-k/top-p to copies (a sort, or flashinfer's top_k_top_p_sampling_from_probs), and the
returned log-probs are `torch.log(probs)`: log_softmax(logits / T) over the FULL vocabulary, before
truncation and without renormalising -- our convention. A batch of only greedy rows takes
`log_softmax(logits)` unscaled (also our convention for temperature 0); with
enable_deterministic_inference or rl_on_policy_target the same quantity comes from F.log_softmax.
`SGLANG_RETURN_ORIGINAL_LOGPROB=1` would return unscaled log_softmax(logits) at every temperature,
so the engine refuses to start with it set. What still differs from the trainer, so watch the
rollout-vs-old log-prob gap: (1) logits are the lm_head output in the serving dtype (bf16) upcast to
fp32 (srt/layers/logits_processor.py: LogitsProcessor._copy_logits_to_buffer) and SGLang's kernels
differ from Megatron's; (2) top_k=1 with temperature T != 1 counts as greedy (is_all_greedy is
top_k <= 1), and in a batch of only such rows the log-prob is unscaled, while the convention and the
trainer divide by T.
"""

import asyncio
import importlib
import importlib.metadata
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from roll.config.worker import WorkerConfig
from roll.strategies.engine import (
    FinishReason,
    GeneratedSample,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
    validate_requests,
)
from roll.strategies.native_engine import sample_seed
from roll.strategies.sglang_server_args import SGLANG_VERSION, check_sglang_args
from roll.utils.logging import get_logger

logger = get_logger(__name__)

_ENGINE = "sglang.srt.entrypoints.engine:Engine"
_TOKENIZER_MANAGER = "sglang.srt.managers.tokenizer_manager:TokenizerManager"
_IO = "sglang.srt.managers.io_struct"
_SERIALIZER = "sglang.srt.utils:MultiprocessingSerializer"
_SAMPLING_PARAMS = "sglang.srt.sampling.sampling_params:SamplingParams"

ENGINE_INIT = f"{_ENGINE}.__init__"
GENERATE = f"{_ENGINE}.async_generate"
SHUTDOWN = f"{_ENGINE}.shutdown"
TOKENIZER_MANAGER = f"{_ENGINE}.tokenizer_manager"
ABORT_REQUEST = f"{_TOKENIZER_MANAGER}.abort_request"
UPDATE_FROM_TENSOR = f"{_TOKENIZER_MANAGER}.update_weights_from_tensor"
INIT_UPDATE_GROUP = f"{_TOKENIZER_MANAGER}.init_weights_update_group"
UPDATE_FROM_DISTRIBUTED = f"{_TOKENIZER_MANAGER}.update_weights_from_distributed"
RELEASE_MEMORY = f"{_TOKENIZER_MANAGER}.release_memory_occupation"
RESUME_MEMORY = f"{_TOKENIZER_MANAGER}.resume_memory_occupation"
UPDATE_FROM_TENSOR_REQ = f"{_IO}:UpdateWeightsFromTensorReqInput"
INIT_UPDATE_GROUP_REQ = f"{_IO}:InitWeightsUpdateGroupReqInput"
UPDATE_FROM_DISTRIBUTED_REQ = f"{_IO}:UpdateWeightsFromDistributedReqInput"
RELEASE_MEMORY_REQ = f"{_IO}:ReleaseMemoryOccupationReqInput"
RESUME_MEMORY_REQ = f"{_IO}:ResumeMemoryOccupationReqInput"
SERIALIZE = f"{_SERIALIZER}.serialize"

# Everything we use of sglang: "module:Qualname" -> the keywords we pass. A method or function
# entry lists its keyword arguments (Engine.__init__ forwards **kwargs to ServerArgs, so those are
# ServerArgs fields); a class entry is a constructor we call with those fields (io_struct requests)
# or, for SamplingParams, the keys of the dicts we send; an attribute entry has no keywords.
SGLANG_API: dict[str, tuple[str, ...]] = {
    ENGINE_INIT: ("model_path", "tp_size", "ep_size", "dtype", "random_seed", "skip_tokenizer_init"),
    GENERATE: ("input_ids", "sampling_params", "return_logprob", "rid"),
    SHUTDOWN: (),
    TOKENIZER_MANAGER: (),
    ABORT_REQUEST: ("rid",),
    UPDATE_FROM_TENSOR: ("obj", "request"),
    INIT_UPDATE_GROUP: ("obj", "request"),
    UPDATE_FROM_DISTRIBUTED: ("obj", "request"),
    RELEASE_MEMORY: ("obj", "request"),
    RESUME_MEMORY: ("obj", "request"),
    UPDATE_FROM_TENSOR_REQ: ("serialized_named_tensors", "flush_cache"),
    INIT_UPDATE_GROUP_REQ: (
        "master_address",
        "master_port",
        "rank_offset",
        "world_size",
        "group_name",
        "backend",
    ),
    UPDATE_FROM_DISTRIBUTED_REQ: ("names", "dtypes", "shapes", "group_name", "flush_cache"),
    RELEASE_MEMORY_REQ: ("tags",),
    RESUME_MEMORY_REQ: ("tags",),
    SERIALIZE: ("obj",),
    _SAMPLING_PARAMS: (
        "n",
        "max_new_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "frequency_penalty",
        "presence_penalty",
        "stop_token_ids",
        "sampling_seed",
        "no_stop_trim",
    ),
}
# The entries we await (coroutine functions); every other function entry is called synchronously.
SGLANG_AWAITED = frozenset(
    {GENERATE, UPDATE_FROM_TENSOR, INIT_UPDATE_GROUP, UPDATE_FROM_DISTRIBUTED, RELEASE_MEMORY, RESUME_MEMORY}
)
# The output-dict keys we read (the conformance test finds each one in tokenizer_manager.py).
SGLANG_OUTPUT_KEYS = ("output_ids", "meta_info", "id", "finish_reason", "output_token_logprobs")

_DTYPES = {"auto": "bfloat16", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# SGLang's finish_reason["type"] values and our FinishReason.
FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort"}


def _checked(key: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs`, after checking that every keyword is listed for `key` in SGLANG_API."""
    unknown = sorted(set(kwargs) - set(SGLANG_API[key]))
    if unknown:
        raise AssertionError(
            f"{key} is called with {unknown}, which SGLANG_API does not list; add them there so "
            "tests/unit/test_sglang_conformance.py checks that sglang accepts them"
        )
    return kwargs


def _sglang(key: str) -> Any:
    """Import the sglang object a SGLANG_API key names (the class of a method/attribute entry)."""
    module, _, qualname = key.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _call(target: Any, key: str, **kwargs: Any) -> Any:
    """Call method `key` (a SGLANG_API key) on `target` with checked keywords."""
    return getattr(target, key.rsplit(".", 1)[1])(**_checked(key, kwargs))


def _new(key: str, **kwargs: Any) -> Any:
    """Construct the sglang class named by `key` with checked keywords."""
    return _sglang(key)(**_checked(key, kwargs))


def engine_kwargs(config: WorkerConfig, seed: int) -> dict[str, Any]:
    """The `sglang.Engine` keywords derived from the WorkerConfig (strategy.args come on top)."""
    return _checked(
        ENGINE_INIT,
        dict(
            model_path=config.model_path,
            tp_size=config.tensor_parallel,
            ep_size=config.expert_parallel,
            dtype=_DTYPES[config.dtype],
            random_seed=seed,
            skip_tokenizer_init=True,
        ),
    )


def sglang_sampling_params(params: SamplingParams, *, sampling_seed: int) -> dict[str, Any]:
    """SGLang's sampling_params dict for one sample row of a request with our `params`.

    The neutral min_p/penalties are explicit so that a server-side `preferred_sampling_params`
    (merged under each request's dict in TokenizerManager._create_tokenized_object) cannot change
    the sampling distribution behind the log-prob convention.
    """
    return _checked(
        _SAMPLING_PARAMS,
        dict(
            n=1,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=0.0,
            repetition_penalty=1.0,
            frequency_penalty=0.0,
            presence_penalty=0.0,
            stop_token_ids=list(params.stop_token_ids),
            sampling_seed=sampling_seed,
            no_stop_trim=True,
        ),
    )


def finish_reason_from_sglang(reason: Any) -> FinishReason:
    """Our finish reason for SGLang's `meta_info["finish_reason"]` dict (see the module docstring)."""
    kind = reason.get("type") if isinstance(reason, Mapping) else None
    if kind not in FINISH_REASONS:
        raise ValueError(
            f"unexpected sglang finish_reason {reason!r}; expected a dict with type stop|length|abort"
        )
    if kind == "stop" and isinstance(reason.get("matched"), str):
        return "abort"  # SGLang's NaN / out-of-vocabulary guard; we send no stop strings
    return FINISH_REASONS[kind]


def sample_from_sglang_output(output: Mapping[str, Any], *, return_logprobs: bool) -> GeneratedSample:
    """One GeneratedSample from one SGLang output dict (one sample row)."""
    meta = output["meta_info"]
    reason = finish_reason_from_sglang(meta.get("finish_reason"))
    if reason == "abort" and meta["finish_reason"].get("type") == "stop":
        logger.warning(
            "sglang request %s stopped on %r; reported as abort", meta.get("id"), meta["finish_reason"]
        )
    token_ids = [int(t) for t in output["output_ids"]]
    if not return_logprobs:
        return GeneratedSample(token_ids=token_ids, logprobs=[], finish_reason=reason)
    entries = meta.get("output_token_logprobs") or []
    logprob_ids = [int(entry[1]) for entry in entries]
    if logprob_ids != token_ids:
        if reason != "abort":
            raise RuntimeError(
                f"sglang request {meta.get('id')}: output_token_logprobs ids ({len(logprob_ids)} tokens) do not "
                f"match output_ids ({len(token_ids)} tokens); the rollout would misalign log-probs"
            )
        # An abort can cut one list a step before the other: keep the common prefix.
        keep = 0
        while keep < min(len(token_ids), len(logprob_ids)) and token_ids[keep] == logprob_ids[keep]:
            keep += 1
        token_ids, entries = token_ids[:keep], entries[:keep]
    return GeneratedSample(
        token_ids=token_ids, logprobs=[float(entry[0]) for entry in entries], finish_reason=reason
    )


def _vocab_size(model_dir: str) -> int | None:
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    vocab = config.get("vocab_size", config.get("text_config", {}).get("vocab_size"))
    return int(vocab) if vocab is not None else None


class SGLangEngine:
    """RolloutEngine on one `sglang.Engine` over `tensor_parallel` GPUs (one actor_infer replica)."""

    def __init__(self, config: WorkerConfig, *, seed: int = 0) -> None:
        try:
            check_sglang_args(config.strategy.args)
        except ValueError as err:
            raise ValueError(f"actor_infer.strategy.args: {err}") from None
        if os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB", "").lower() in ("1", "true"):
            raise ValueError(
                "SGLANG_RETURN_ORIGINAL_LOGPROB is set: SGLang would return log-probs before temperature "
                "scaling, not the sampling distribution the trainer recomputes; unset it"
            )
        try:
            import sglang  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"actor_infer.strategy.name=sglang needs sglang {SGLANG_VERSION} on a GPU machine "
                f"(pip install 'roll-rl[sglang]'), but `import sglang` failed ({err}); on CPU use "
                "strategy.name=native"
            ) from err
        installed = importlib.metadata.version("sglang")
        if installed != SGLANG_VERSION:
            logger.warning(
                "sglang %s is installed; this engine is checked against %s (SGLANG_API)",
                installed,
                SGLANG_VERSION,
            )
        self.seed = seed
        self.tp_size = config.tensor_parallel
        self.vocab_size = _vocab_size(config.model_path)
        # Counters since start, like the native engine's.
        self.stats = {"requests": 0, "prefill_tokens": 0, "cached_tokens": 0, "generated_tokens": 0}
        self._rids: dict[str, list[str]] = {}  # request_id -> SGLang rids of its rows, while in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine = _sglang(_ENGINE)(**engine_kwargs(config, seed), **config.strategy.args)
        logger.info("sglang engine up: %s tp=%d", config.model_path, self.tp_size)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Complete every request (n sample rows each, one batch call); outputs come back in request order."""
        self._bind_loop()
        validate_requests(requests, self._rids, self.vocab_size)
        if not requests:
            return []
        rows: list[tuple[int, str, dict[str, Any]]] = []  # (request index, rid, sampling params)
        for i, r in enumerate(requests):
            seed = self.seed if r.sampling.seed is None else r.sampling.seed
            rids = [f"{r.request_id}:{j}:{uuid.uuid4().hex}" for j in range(r.sampling.n)]
            self._rids[r.request_id] = rids
            rows += [
                (i, rid, sglang_sampling_params(r.sampling, sampling_seed=sample_seed(seed, r.request_id, j)))
                for j, rid in enumerate(rids)
            ]
        try:
            outputs = await _call(
                self._engine,
                GENERATE,
                input_ids=[list(requests[i].prompt_ids) for i, _, _ in rows],
                sampling_params=[params for _, _, params in rows],
                return_logprob=[requests[i].sampling.return_logprobs for i, _, _ in rows],
                rid=[rid for _, rid, _ in rows],
            )
        finally:
            for r in requests:
                self._rids.pop(r.request_id, None)
        by_rid = {
            out["meta_info"]["id"]: out for out in ([outputs] if isinstance(outputs, Mapping) else outputs)
        }
        results = [
            GenerationOutput(request_id=r.request_id, prompt_ids=list(r.prompt_ids), samples=[])
            for r in requests
        ]
        for i, rid, _ in rows:
            out = by_rid[rid]
            results[i].samples.append(
                sample_from_sglang_output(out, return_logprobs=requests[i].sampling.return_logprobs)
            )
            meta = out["meta_info"]
            self.stats["prefill_tokens"] += int(meta.get("prompt_tokens", 0))
            self.stats["cached_tokens"] += int(meta.get("cached_tokens", 0))
            self.stats["generated_tokens"] += len(out["output_ids"])
        self.stats["requests"] += len(requests)
        return results

    async def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load HF-named tensors into the served model (waits for in-flight generation; flushes the prefix cache)."""
        named = list(named_tensors)
        serializer = _sglang(_SERIALIZER)
        # One payload per TP rank: each rank unpickles its own copy (Engine._serialize_tensors_per_rank).
        payloads = [_call(serializer, SERIALIZE, obj=named) for _ in range(self.tp_size)]
        await self._control(
            UPDATE_FROM_TENSOR,
            _new(UPDATE_FROM_TENSOR_REQ, serialized_named_tensors=payloads, flush_cache=True),
        )
        logger.info("sglang engine: updated %d weights", len(named))

    async def abort(self, request_ids: Iterable[str]) -> None:
        """End these in-flight requests; their rows return their tokens so far with finish_reason "abort"."""
        self._bind_loop()
        manager = self._tokenizer_manager()
        for request_id in request_ids:
            for rid in self._rids.get(request_id, ()):
                _call(manager, ABORT_REQUEST, rid=rid)

    async def init_weights_update_group(
        self,
        master_address: str,
        master_port: int,
        rank_offset: int,
        world_size: int,
        group_name: str = "weight_update_group",
        backend: str = "nccl",
    ) -> None:
        """Join a process group with the trainer's sending ranks (this engine's ranks start at rank_offset)."""
        await self._control(
            INIT_UPDATE_GROUP,
            _new(
                INIT_UPDATE_GROUP_REQ,
                master_address=master_address,
                master_port=master_port,
                rank_offset=rank_offset,
                world_size=world_size,
                group_name=group_name,
                backend=backend,
            ),
        )

    async def update_weights_from_distributed(
        self,
        names: Sequence[str],
        dtypes: Sequence[torch.dtype | str],
        shapes: Sequence[Sequence[int]],
        group_name: str = "weight_update_group",
        flush_cache: bool = True,
    ) -> None:
        """Receive the named tensors broadcast over `group_name` and load them."""
        await self._control(
            UPDATE_FROM_DISTRIBUTED,
            _new(
                UPDATE_FROM_DISTRIBUTED_REQ,
                names=list(names),
                dtypes=[str(d).removeprefix("torch.") for d in dtypes],
                shapes=[list(s) for s in shapes],
                group_name=group_name,
                flush_cache=flush_cache,
            ),
        )

    async def release_memory(self, tags: list[str] | None = None) -> None:
        """Free weights and/or KV cache ("weights", "kv_cache"; None = both); needs enable_memory_saver: true."""
        await self._control(RELEASE_MEMORY, _new(RELEASE_MEMORY_REQ, tags=tags))

    async def resume_memory(self, tags: list[str] | None = None) -> None:
        """Re-allocate what `release_memory` freed."""
        await self._control(RESUME_MEMORY, _new(RESUME_MEMORY_REQ, tags=tags))

    def shutdown(self) -> None:
        """Stop SGLang's scheduler and detokenizer processes."""
        _call(self._engine, SHUTDOWN)

    def _tokenizer_manager(self) -> Any:
        return getattr(self._engine, TOKENIZER_MANAGER.rsplit(".", 1)[1])

    async def _control(self, key: str, request: Any) -> None:
        """Await a TokenizerManager control coroutine; raise if it reports failure."""
        self._bind_loop()
        result = await _call(self._tokenizer_manager(), key, obj=request, request=None)
        if isinstance(result, tuple) and not result[0]:
            raise RuntimeError(f"sglang {key.rsplit('.', 1)[1]} failed: {result[1]}")

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                "SGLangEngine was awaited on a second event loop; SGLang's TokenizerManager is bound to the "
                "first one, so call every method from one loop (the actor's)"
            )
