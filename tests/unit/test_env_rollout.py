"""Multi-turn episodes against the real native engine: token-in/token-out ids, masks, limits and
termination reasons, env failures, batching of concurrent trajectories, determinism."""

import asyncio
import json
import time

import pytest
import torch

from roll.config.environment import EnvironmentConfig
from roll.data.synthetic import build_char_tokenizer
from roll.data.tokenizer import load_tokenizer
from roll.envs import StepResult, register_env
from roll.models.tiny import save_tiny_hf_model
from roll.strategies.engine import SamplingParams
from roll.strategies.env_rollout import EpisodeRunner, EpisodeSpec
from roll.strategies.native_engine import NativeEngine


@register_env("test_endless")
class EndlessEnv:
    """Never ends; every action is valid unless `invalid` (then every action is invalid)."""

    def __init__(
        self, invalid: bool = False, fail_at_step: int = -1, sleep_at_step: int = -1, sleep_s: float = 0.0
    ):
        self.invalid, self.fail_at_step, self.sleep_at_step, self.sleep_s = (
            invalid,
            fail_at_step,
            sleep_at_step,
            sleep_s,
        )

    def reset(self, seed):
        self.steps = 0
        return f"Start {seed % 10}.\n", {"state": "start"}

    def step(self, action):
        self.steps += 1
        if self.steps == self.fail_at_step:
            raise RuntimeError("the simulator crashed")
        if self.steps == self.sleep_at_step:
            time.sleep(self.sleep_s)
        info = {"invalid_action": self.invalid, "state": f"s{self.steps}", "success": False}
        return StepResult(
            observation=f"ok {self.steps}\n", reward=0.25, terminated=False, truncated=False, info=info
        )


@register_env("test_bad_types")
class BadTypesEnv:
    def reset(self, seed):
        return "hello\n", {}

    def step(self, action):
        return ("obs", 1.0, False, False, {})


@pytest.fixture(scope="module")
def char_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("char")
    tokenizer_dir = build_char_tokenizer(root / "tok")
    model_dir = save_tiny_hf_model("qwen2", root / "model", vocab_size=128)
    return load_tokenizer(tokenizer_dir), str(model_dir)


@pytest.fixture(scope="module")
def bpe_setup(tmp_path_factory):
    """A byte-level BPE tokenizer (merges make re-encoding of sampled ids differ) and a model over its vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("bpe")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Start 3.\n", "ok 1\n", "ok 2\n", "the ok start stone tool\n"] * 50
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    hf.save_pretrained(root / "tok")
    model_dir = save_tiny_hf_model("qwen2", root / "model", vocab_size=len(hf))
    return load_tokenizer(root / "tok"), str(model_dir)


# Stop on any token: every turn is one token long and ends with "stop" (the model is random).
EVERY_TOKEN = SamplingParams(temperature=1.0, max_new_tokens=4, stop_token_ids=tuple(range(128)))


class RecordingEngine:
    """The native engine, recording every request's prompt ids and response ids by request id."""

    def __init__(self, model_dir: str) -> None:
        self.engine = NativeEngine(model_dir, seed=3)
        self.seen: dict[str, tuple[list[int], list[int]]] = {}
        self.calls = 0

    async def generate(self, requests):
        self.calls += 1
        outputs = await self.engine.generate(requests)
        for request, output in zip(requests, outputs):
            self.seen[request.request_id] = (list(request.prompt_ids), list(output.samples[0].token_ids))
        return outputs


def env_config(**overrides) -> EnvironmentConfig:
    args = overrides.pop("args", {})
    return EnvironmentConfig(
        envs=[{"type": overrides.pop("type", "test_endless"), "args": args}], **overrides
    )


def play(cfg, tokenizer, engine, episodes, sampling=None, tag="t"):
    runner = EpisodeRunner(cfg, tokenizer, engine.generate)
    sampling = sampling or SamplingParams(temperature=1.0, max_new_tokens=4)
    try:
        return asyncio.run(runner.run(episodes, sampling, tag))
    finally:
        runner.close()


def episodes(n_groups, group_size, env="test_endless"):
    return [
        EpisodeSpec(env=env, seed=g, group=g, sample=s) for g in range(n_groups) for s in range(group_size)
    ]


def test_trajectory_ids_are_exactly_what_the_engine_saw_and_produced(bpe_setup):
    tokenizer, model_dir = bpe_setup
    engine = RecordingEngine(model_dir)
    cfg = env_config(max_turns=4, max_context_tokens=512)
    trajectories = play(
        cfg, tokenizer, engine, episodes(2, 3), SamplingParams(temperature=1.0, max_new_tokens=6)
    )
    redo_differs = False
    for traj in trajectories:
        spec = traj.spec
        turns = [engine.seen[f"t-g{spec.group}-s{spec.sample}-t{k}"] for k in range(traj.num_turns)]
        last_prompt, last_response = turns[-1]
        assert traj.ids == last_prompt + last_response
        mask = torch.tensor(traj.response_mask)
        expected = torch.zeros(len(traj.ids), dtype=torch.long)
        for prompt, response in turns:
            assert traj.ids[: len(prompt)] == prompt  # every turn's prompt is a prefix: nothing re-tokenised
            expected[len(prompt) : len(prompt) + len(response)] = 1
            logprobs = traj.logprobs[len(prompt) : len(prompt) + len(response)]
            assert all(lp <= 0.0 for lp in logprobs) and len(logprobs) == len(response)
        assert torch.equal(mask, expected)
        assert traj.turn_index == [
            k if m else -1 for m, k in zip(traj.response_mask, _turn_of_positions(turns, len(traj.ids)))
        ]
        text = tokenizer.decode(traj.ids)
        redo_differs |= tokenizer(text, add_special_tokens=False)["input_ids"] != traj.ids
    # The guarantee matters: with this BPE tokenizer, decode + re-encode changes some trajectory's ids.
    assert redo_differs


def _turn_of_positions(turns, length):
    positions = [-1] * length
    for k, (prompt, response) in enumerate(turns):
        for i in range(len(prompt), len(prompt) + len(response)):
            positions[i] = k
    return positions


def test_observations_are_appended_between_turns_with_mask_zero(char_setup):
    tokenizer, model_dir = char_setup
    cfg = env_config(max_turns=3, max_context_tokens=512)
    traj = play(cfg, tokenizer, RecordingEngine(model_dir), episodes(1, 1), EVERY_TOKEN)[0]
    masked_out = tokenizer.decode(
        [t for t, m in zip(traj.ids, traj.response_mask) if m == 0], skip_special_tokens=True
    )
    # Start observation + the two observations that preceded turns 2 and 3 (the last one is never sent).
    assert masked_out == "Start 0.\nok 1\nok 2\n"
    assert traj.termination == "max_turns" and traj.num_turns == 3
    assert traj.step_rewards == [0.25, 0.25, 0.25] and traj.reward == pytest.approx(0.75)
    assert traj.step_states == ["start", "s1", "s2"]


def test_turn_length_and_context_limits_end_trajectories_cleanly(char_setup):
    tokenizer, model_dir = char_setup
    # No stop token: every response runs to max_new_tokens -> turn_length after the first turn.
    traj = play(
        env_config(max_turns=5),
        tokenizer,
        RecordingEngine(model_dir),
        episodes(1, 1),
        SamplingParams(temperature=1.0, max_new_tokens=3),
    )[0]
    assert traj.termination == "turn_length" and traj.num_turns == 1
    # A context budget smaller than prompt + one full turn: the turn is cut to fit, reason context_full.
    prompt_len = len(tokenizer("Start 0.\n")["input_ids"])
    traj = play(
        env_config(max_turns=5, max_context_tokens=prompt_len + 2),
        tokenizer,
        RecordingEngine(model_dir),
        episodes(1, 1),
        SamplingParams(temperature=1.0, max_new_tokens=3),
    )[0]
    assert traj.termination == "context_full" and len(traj.ids) == prompt_len + 2


def test_stop_token_turns_and_invalid_action_limit(char_setup):
    tokenizer, model_dir = char_setup
    traj = play(
        env_config(max_turns=6, max_invalid_actions=2, args={"invalid": True}),
        tokenizer,
        RecordingEngine(model_dir),
        episodes(1, 1),
        EVERY_TOKEN,
    )[0]
    assert traj.termination == "invalid_action" and traj.invalid_actions == 2 and traj.num_turns == 2
    assert traj.generated_tokens == 2


def test_env_errors_and_timeouts_end_only_their_trajectory(char_setup):
    tokenizer, model_dir = char_setup
    cfg = EnvironmentConfig(
        envs=[
            {"type": "test_endless", "name": "crash", "args": {"fail_at_step": 2}},
            {"type": "test_endless", "name": "slow", "args": {"sleep_at_step": 1, "sleep_s": 2.0}},
            {"type": "test_endless", "name": "fine"},
            {"type": "test_bad_types", "name": "bad"},
        ],
        max_turns=3,
        step_timeout_s=0.5,
    )
    specs = [
        EpisodeSpec(env=name, seed=i, group=i, sample=0)
        for i, name in enumerate(["crash", "slow", "fine", "bad"])
    ]
    started = time.perf_counter()
    crash, slow, fine, bad = play(cfg, tokenizer, RecordingEngine(model_dir), specs, EVERY_TOKEN)
    assert time.perf_counter() - started < 2.0  # the slow env did not hold the others back
    assert (
        crash.termination == "env_error" and "the simulator crashed" in crash.error and crash.num_turns == 2
    )
    assert slow.termination == "timeout" and slow.num_turns == 1
    assert fine.termination == "max_turns" and fine.num_turns == 3
    assert bad.termination == "env_error" and "StepResult" in bad.error


def test_concurrent_trajectories_share_engine_calls_and_replay_deterministically(char_setup):
    tokenizer, model_dir = char_setup
    engine = RecordingEngine(model_dir)
    cfg = env_config(max_turns=3, batch_wait_s=1.0)
    first = play(cfg, tokenizer, engine, episodes(8, 4), EVERY_TOKEN)
    # 32 trajectories x 3 turns were served by one batched call per turn, not one call per request.
    assert engine.calls == 3
    again = play(cfg, tokenizer, RecordingEngine(model_dir), episodes(8, 4), EVERY_TOKEN)
    assert [t.ids for t in first] == [t.ids for t in again]
    # A concurrency cap below the number of trajectories still plays them all.
    capped = play(
        env_config(max_turns=3, envs_per_worker=5),
        tokenizer,
        RecordingEngine(model_dir),
        episodes(8, 4),
        EVERY_TOKEN,
    )
    assert [t.ids for t in capped] == [t.ids for t in first]


def test_unknown_env_in_episodes_is_a_clear_error(char_setup):
    tokenizer, model_dir = char_setup
    with pytest.raises(ValueError, match="not in environment.envs"):
        play(env_config(), tokenizer, RecordingEngine(model_dir), episodes(1, 1, env="nope"))


class ScriptedPolicy:
    """An engine whose policy is a script: turn k of every trajectory answers `texts[k]` (+ EOS).
    It exercises the loop's handling of chosen actions (tool calls) that a random model never emits."""

    def __init__(self, tokenizer, texts: list[str]) -> None:
        self.tokenizer, self.texts = tokenizer, texts

    async def generate(self, requests):
        from roll.strategies.engine import GeneratedSample, GenerationOutput

        outputs = []
        for request in requests:
            turn = int(request.request_id.rsplit("-t", 1)[1])
            ids = self.tokenizer(self.texts[turn], add_special_tokens=False)["input_ids"] + [
                self.tokenizer.eos_token_id
            ]
            sample = GeneratedSample(token_ids=ids, logprobs=[-0.5] * len(ids), finish_reason="stop")
            outputs.append(
                GenerationOutput(
                    request_id=request.request_id, prompt_ids=request.prompt_ids, samples=[sample]
                )
            )
        return outputs


def test_tool_call_output_is_an_observation_and_the_env_is_not_stepped(char_setup):
    from roll.envs.bundled.countdown import Countdown
    from roll.envs.bundled.tools import Calculator

    tokenizer, _ = char_setup
    env = Countdown()
    env.reset(5)
    payload = json.dumps({"name": "calculator", "arguments": {"expression": env.solution}})
    call = f"<tool_call>{payload}</tool_call>"
    policy = ScriptedPolicy(tokenizer, [call, f"<answer>{env.solution}</answer>"])
    cfg = EnvironmentConfig(envs=[{"type": "countdown", "tools": [{"type": "calculator"}]}], max_turns=4)
    (traj,) = play(cfg, tokenizer, policy, [EpisodeSpec(env="countdown", seed=5, group=0, sample=0)])
    assert traj.tool_calls == 1 and traj.num_turns == 2
    assert traj.step_rewards == [0.0, 1.0] and traj.success and traj.termination == "terminated"
    observed = tokenizer.decode(
        [t for t, m in zip(traj.ids, traj.response_mask) if m == 0], skip_special_tokens=True
    )
    assert "calculator" in observed.split("\n", 1)[1]  # the tool instructions follow the first observation
    result = Calculator()(expression=env.solution)
    assert f"<tool_response>\n{result}\n</tool_response>" in observed
    assert traj.step_states[1] != traj.step_states[0]  # the policy acted after seeing the tool's answer


def test_chat_observations_equal_the_template_rendering_of_the_whole_conversation(char_setup):
    """Incremental chat turns (first observation, response ids with EOS, each next observation's delta)
    give the ids of the chat template applied to the whole conversation at once."""
    from roll.data.templates import ObservationEncoder

    tokenizer, _ = char_setup
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]\n{% endif %}"
    )
    encoder = ObservationEncoder(tokenizer, "chat")
    observations, actions = ["Guess 1 to 8.", "4 is too low.", "6 is too high."], ["4", "6"]
    ids = encoder.first(observations[0])
    for action, observation in zip(actions, observations[1:]):
        ids += tokenizer(action, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids += encoder.next(observation)
    messages = [{"role": "user", "content": observations[0]}]
    for action, observation in zip(actions, observations[1:]):
        messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    tokenizer.chat_template = None


def test_start_up_contract_check_names_the_env_and_the_fix():
    from roll.config.environment import EnvSpec
    from roll.config.errors import ConfigError
    from roll.pipelines.agentic import check_env_contract

    check_env_contract(EnvSpec(type="guess_number"))
    with pytest.raises(ConfigError) as err:
        check_env_contract(EnvSpec(type="test_bad_types", name="bad"))
    assert "env 'bad'" in str(err.value) and "return roll.envs.StepResult(" in str(err.value)
    assert "\n" not in str(err.value)
