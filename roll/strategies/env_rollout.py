"""Multi-turn rollouts in text environments, token-in/token-out, with tool calls.

One trajectory, turn by turn (`EpisodeRunner._episode`):

    ids = encode(first observation [+ tool instructions])            # the prompt
    repeat up to environment.max_turns:
        engine.generate(ids) -> response ids + log-probs             # one request per turn
        ids += response ids                        (response_mask 1)
        action = decode(response); a <tool_call> runs the tool, anything else is env.step(action)
        ids += encode(observation or tool output)  (response_mask 0)  # appended only if a turn follows

Earlier turns are never re-tokenised: the trajectory's ids are exactly what the engine was given
and what it produced, so the trainer scores the tokens the policy sampled. A trajectory ends with
one of `TERMINATIONS`. Many trajectories run at once as asyncio tasks; `TurnBatcher` gathers the
turns waiting for the engine into one `generate` call, so neither the engine nor the env loop
serialises on one trajectory. Env calls run in threads under `step_timeout_s`; an env that raises
or times out ends its trajectory (env_error | timeout) and is replaced by a fresh instance.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from roll.config.environment import EnvironmentConfig, EnvSpec
from roll.data.templates import ObservationEncoder
from roll.envs.base import EnvContractError, check_reset_result, check_step_result
from roll.envs.registry import ENVS
from roll.envs.tools import ToolRunner
from roll.strategies.engine import GenerationOutput, GenerationRequest, SamplingParams
from roll.utils.logging import get_logger

logger = get_logger(__name__)

TERMINATIONS = (
    "terminated",  # the env reached an end state (solved or failed)
    "truncated",  # the env cut the episode (its own step limit)
    "max_turns",  # environment.max_turns policy turns were taken
    "context_full",  # the next turn would pass environment.max_context_tokens
    "turn_length",  # a response reached generation.max_new_tokens without a stop token
    "invalid_action",  # environment.max_invalid_actions invalid actions
    "env_error",  # the env raised, or returned values of the wrong types
    "timeout",  # an env call took longer than environment.step_timeout_s
    "aborted",  # the engine aborted the request
)

GenerateFn = Callable[[list[GenerationRequest]], Awaitable[list[GenerationOutput]]]


@dataclass(kw_only=True, frozen=True)
class EpisodeSpec:
    """Which episode to play: env (by name), initial-state seed, and its place in the step's groups."""

    env: str
    seed: int
    group: int
    """Trajectories of one group share env and seed (the GRPO/StarPO/GiGPO group)."""
    sample: int
    """Index of the trajectory within its group."""


@dataclass(kw_only=True)
class Trajectory:
    """One finished episode: its token row and what happened in it."""

    spec: EpisodeSpec
    ids: list[int] = field(default_factory=list)
    """Every token of the episode: prompt, then responses and observations interleaved (L,)."""
    response_mask: list[int] = field(default_factory=list)
    """(L,) 1 on tokens the policy generated, 0 on prompt / observation / tool tokens."""
    logprobs: list[float] = field(default_factory=list)
    """(L,) the engine's log-prob of each generated token, 0 elsewhere."""
    turn_index: list[int] = field(default_factory=list)
    """(L,) turn number of each generated token, -1 elsewhere."""
    prompt_length: int = 0
    """Tokens of the first observation (the prompt)."""
    step_rewards: list[float] = field(default_factory=list)
    """(turns,) env reward of each turn (0 for tool calls and turns the env never saw)."""
    step_states: list[str] = field(default_factory=list)
    """(turns,) key of the state each turn acted from (env info["state"], else the observation)."""
    success: bool = False
    """The env's info["success"] after the last step."""
    invalid_actions: int = 0
    tool_calls: int = 0
    termination: str = "max_turns"
    """One of TERMINATIONS."""
    error: Optional[str] = None
    """The env's exception or timeout message (env_error / timeout)."""

    @property
    def reward(self) -> float:
        """Trajectory score: the sum of its step rewards."""
        return float(sum(self.step_rewards))

    @property
    def num_turns(self) -> int:
        """Policy turns taken."""
        return len(self.step_rewards)

    @property
    def generated_tokens(self) -> int:
        """Tokens the policy generated over all turns."""
        return int(sum(self.response_mask))


class TurnBatcher:
    """Gathers the turns of concurrent trajectories into batched `generate` calls.

    A batch is sent as soon as every running trajectory is waiting for the engine, or `wait_s`
    after its first request (trajectories still busy in a slow env step join the next batch).
    """

    def __init__(self, generate: GenerateFn, wait_s: float) -> None:
        self._generate = generate
        self._wait_s = wait_s
        self._pending: list[tuple[GenerationRequest, asyncio.Future]] = []
        self._timer: Optional[asyncio.TimerHandle] = None
        self._sending: set[asyncio.Task] = set()
        self.running = 0
        """Trajectories that may still submit a turn."""
        self.calls = 0
        """generate calls made (for metrics: requests per call = batching efficiency)."""

    async def submit(self, request: GenerationRequest) -> GenerationOutput:
        """Queue one turn's request; returns its output once the batch it joined comes back."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._maybe_send()
        return await future

    def join(self) -> None:
        """A trajectory starts."""
        self.running += 1

    def leave(self) -> None:
        """A trajectory ended: the others may now all be waiting."""
        self.running -= 1
        self._maybe_send()

    def _maybe_send(self) -> None:
        if not self._pending:
            return
        if len(self._pending) >= self.running:
            self._send()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._wait_s, self._send)

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            self.calls += 1
            task = asyncio.ensure_future(self._run(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _run(self, batch: list[tuple[GenerationRequest, asyncio.Future]]) -> None:
        try:
            outputs = await self._generate([request for request, _ in batch])
        except BaseException as err:  # the engine failed: every waiting trajectory sees it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), output in zip(batch, outputs):
            if not future.done():
                future.set_result(output)


class _EnvFailure(Exception):
    """An env call raised, returned wrong types or timed out; `reason` is env_error | timeout."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EpisodeRunner:
    """Plays episodes against a rollout engine; holds a pool of env instances and tools per env spec."""

    def __init__(self, cfg: EnvironmentConfig, tokenizer, generate: GenerateFn) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.encoder = ObservationEncoder(tokenizer, cfg.observation_format)
        self.generate = generate
        self.specs: dict[str, EnvSpec] = {spec.name: spec for spec in cfg.envs}
        self._idle: dict[str, list[Any]] = {name: [] for name in self.specs}
        self.tools: dict[str, Optional[ToolRunner]] = {
            name: ToolRunner([(t.type, t.args) for t in spec.tools]) if spec.tools else None
            for name, spec in self.specs.items()
        }
        self.stats = {"env_instances": 0, "discarded_envs": 0}
        self._executor = self._new_executor()

    def _new_executor(self) -> ThreadPoolExecutor:
        # Env calls run on this pool, not asyncio's default one, whose shutdown would wait for them.
        return ThreadPoolExecutor(max_workers=self.cfg.envs_per_worker + 2, thread_name_prefix="roll-env")

    async def run(
        self, episodes: Sequence[EpisodeSpec], sampling: SamplingParams, tag: str
    ) -> list[Trajectory]:
        """Play every episode (n=1 per turn request; the group's samples are separate episodes);
        returns trajectories in the order of `episodes`. `tag` makes request ids unique per call."""
        unknown = sorted({e.env for e in episodes} - set(self.specs))
        if unknown:
            raise ValueError(
                f"episodes name envs {unknown} that are not in environment.envs {list(self.specs)}"
            )
        batcher = TurnBatcher(self.generate, self.cfg.batch_wait_s)
        slots = asyncio.Semaphore(self.cfg.envs_per_worker)
        sampling = replace(sampling, n=1)

        async def play(spec: EpisodeSpec) -> Trajectory:
            async with slots:
                batcher.join()
                try:
                    return await self._episode(spec, sampling, tag, batcher)
                finally:
                    batcher.leave()

        started = time.perf_counter()
        trajectories = list(await asyncio.gather(*(play(spec) for spec in episodes)))
        logger.debug(
            "%d episodes in %.2f s, %d generate calls",
            len(episodes),
            time.perf_counter() - started,
            batcher.calls,
        )
        self.stats["generate_calls"] = self.stats.get("generate_calls", 0) + batcher.calls
        return trajectories

    def close(self) -> None:
        """Close every idle env instance and the env thread pool (without waiting for stuck calls)."""
        for envs in self._idle.values():
            for env in envs:
                _close_quietly(env)
            envs.clear()
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ one episode
    async def _episode(
        self, spec: EpisodeSpec, sampling: SamplingParams, tag: str, batcher: TurnBatcher
    ) -> Trajectory:
        cfg, traj = self.cfg, Trajectory(spec=spec)
        env = self._acquire(spec.env)
        tools = self.tools[spec.env]
        try:
            observation, info = check_reset_result(spec.env, await self._env_call(env.reset, spec.seed))
        except (_EnvFailure, EnvContractError) as failure:
            self._fail(traj, failure, env)
            # The row still needs a token for the batch; it carries no policy tokens (mask 0).
            traj.ids, traj.response_mask, traj.logprobs, traj.turn_index = (
                [self._filler_id()],
                [0],
                [0.0],
                [-1],
            )
            traj.prompt_length = 1
            return traj
        if tools is not None:
            observation = observation + tools.describe()
        self._append(traj, self.encoder.first(observation), policy=False)
        traj.prompt_length = len(traj.ids)
        state = str(info.get("state", observation))
        pending: Optional[str] = None  # observation waiting to be appended before the next turn
        healthy = True
        for turn in range(cfg.max_turns):
            if pending is not None:
                next_ids = self.encoder.next(pending)
                if len(traj.ids) + len(next_ids) >= cfg.max_context_tokens:
                    traj.termination = "context_full"
                    break
                self._append(traj, next_ids, policy=False)
            budget = cfg.max_context_tokens - len(traj.ids)
            if budget < 1:
                traj.termination = "context_full"
                break
            request = GenerationRequest(
                request_id=f"{tag}-g{spec.group}-s{spec.sample}-t{turn}",
                prompt_ids=list(traj.ids),
                sampling=replace(sampling, max_new_tokens=min(sampling.max_new_tokens, budget)),
            )
            sample = (await batcher.submit(request)).samples[0]
            self._append(traj, sample.token_ids, policy=True, logprobs=sample.logprobs, turn=turn)
            traj.step_rewards.append(0.0)
            traj.step_states.append(state)
            if sample.finish_reason == "abort":
                traj.termination = "aborted"
                break
            if sample.finish_reason == "length":
                traj.termination = "context_full" if budget < sampling.max_new_tokens else "turn_length"
                break
            action = self.tokenizer.decode(sample.token_ids, skip_special_tokens=True)
            tool_output = tools.run(action) if tools is not None else None
            if tool_output is not None:
                traj.tool_calls += 1
                pending = tool_output
                # The env state is unchanged, but the policy now acts having seen the tool's answer.
                state = f"{state}\n{tool_output}"
                continue
            try:
                result = check_step_result(spec.env, await self._env_call(env.step, action))
            except (_EnvFailure, EnvContractError) as failure:
                self._fail(traj, failure, env)
                healthy = False
                break
            traj.step_rewards[-1] = float(result.reward)
            traj.success = bool(result.info.get("success", False))
            if result.info.get("invalid_action"):
                traj.invalid_actions += 1
            if result.terminated or result.truncated:
                traj.termination = "terminated" if result.terminated else "truncated"
                break
            if cfg.max_invalid_actions and traj.invalid_actions >= cfg.max_invalid_actions:
                traj.termination = "invalid_action"
                break
            pending = result.observation
            state = str(result.info.get("state", result.observation))
        if healthy:
            self._idle[spec.env].append(env)
        return traj

    # ------------------------------------------------------------------ helpers
    async def _env_call(self, fn: Callable[..., Any], arg: Any) -> Any:
        """Run a blocking env call in a thread under step_timeout_s; failures become _EnvFailure."""
        timeout = self.cfg.step_timeout_s
        call = asyncio.get_running_loop().run_in_executor(self._executor, fn, arg)
        try:
            return await asyncio.wait_for(call, timeout)
        except asyncio.TimeoutError:
            # Python cannot stop the stuck thread; later calls go to a fresh pool so it never starves them.
            self._executor.shutdown(wait=False)
            self._executor = self._new_executor()
            raise _EnvFailure(
                "timeout", f"{getattr(fn, '__qualname__', fn)} took longer than {timeout} s"
            ) from None
        except Exception as err:  # user env code: any failure ends this trajectory only
            raise _EnvFailure("env_error", f"{type(err).__name__}: {err}") from None

    def _fail(self, traj: Trajectory, failure: Exception, env: Any) -> None:
        traj.termination = failure.reason if isinstance(failure, _EnvFailure) else "env_error"
        traj.error = str(failure)
        logger.warning("env %s seed %d: %s: %s", traj.spec.env, traj.spec.seed, traj.termination, failure)
        # A failed env may be mid-step in its thread or in a broken state: never reuse it.
        self.stats["discarded_envs"] += 1
        asyncio.get_running_loop().run_in_executor(self._executor, _close_quietly, env)

    def _acquire(self, name: str) -> Any:
        idle = self._idle[name]
        if idle:
            return idle.pop()
        spec = self.specs[name]
        self.stats["env_instances"] += 1
        return ENVS.build(spec.type, spec.args)

    @staticmethod
    def _append(
        traj: Trajectory,
        ids: Sequence[int],
        *,
        policy: bool,
        logprobs: Sequence[float] = (),
        turn: int = -1,
    ) -> None:
        traj.ids += list(ids)
        traj.response_mask += [int(policy)] * len(ids)
        traj.logprobs += list(logprobs) if policy and logprobs else [0.0] * len(ids)
        traj.turn_index += [turn if policy else -1] * len(ids)

    def _filler_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def _close_quietly(env: Any) -> None:
    close = getattr(env, "close", None)
    if callable(close):
        try:
            close()
        except Exception as err:  # closing a broken env must not fail the rollout
            logger.debug("env close failed: %s", err)
