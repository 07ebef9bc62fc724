"""Agentic configs: every bad env / tool / limit setting fails at load time with one line naming the
key and the fix, before any worker starts."""

from pathlib import Path

import pytest

from roll.config.errors import ConfigError
from roll.config.loader import load_config

BASE_YAML = """
pipeline: agentic
rollout_batch_size: 4
actor_train:
  model_path: /models/policy
  micro_batch_size: 4
  optimizer: {lr: 1.0e-6}
actor_infer:
  model_path: ${actor_train.model_path}
generation: {num_samples: 4, max_new_tokens: 16}
algorithm: {advantage_estimator: grpo, mini_batch_size: 16}
environment:
  envs:
    - {type: guess_number, args: {low: 1, high: 8}}
    - {type: countdown, tools: [{type: calculator}]}
  max_turns: 4
"""

BAD = [
    (
        ["environment.envs.0.type=guess_numbr"],
        "env type='guess_numbr' is not registered; did you mean 'guess_number'?",
    ),
    (["environment.envs.0.type=nopkg.envs:Env"], "cannot import module 'nopkg.envs'"),
    (["environment.envs.0.type=roll.envs.bundled.guess_number:GuesNumber"], "has no attribute 'GuesNumber'"),
    (["environment.envs.0.args={lo: 1}"], "env 'guess_number': unknown arg 'lo'; did you mean 'low'?"),
    (["environment.envs.1.tools.0.type=calculater"], "tool type='calculater' is not registered"),
    (["environment.envs.1.tools.0.args={precision: 3}"], "tool 'calculator': unknown arg 'precision'"),
    (["environment.max_turns=0"], "environment.max_turns=0 must be >= 1"),
    (["environment.envs=[]"], "environment.envs is empty"),
    (["environment.observation_format=xml"], "environment.observation_format='xml' is not one of plain|chat"),
    (
        ["environment.max_context_tokens=16"],
        "environment.max_context_tokens(16) must exceed generation.max_new_tokens(16)",
    ),
    (["environment=null"], "pipeline=agentic needs an environment: section"),
    (["generation.num_samples=1"], "needs generation.num_samples >= 2"),
    (
        ["algorithm.mini_batch_size=12"],
        "16 responses per step is not a multiple of algorithm.mini_batch_size(12)",
    ),
    (["pipeline=rlvr", "data.train_path=/d.jsonl"], "environment is set but pipeline=rlvr does not use it"),
]


@pytest.fixture(scope="module")
def base_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "agentic.yaml"
    path.write_text(BASE_YAML)
    return path


def test_base_agentic_config_is_valid(base_yaml):
    cfg = load_config(str(base_yaml))
    assert [e.name for e in cfg.environment.envs] == ["guess_number", "countdown"]
    assert cfg.environment.envs[1].tools[0].type == "calculator"
    assert not cfg.data.train_path  # episodes come from the environments, not a data file


@pytest.mark.parametrize(("overrides", "fragment"), BAD, ids=[f for _, f in BAD])
def test_bad_agentic_config_names_its_rule(base_yaml, overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(str(base_yaml), overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_gigpo_outside_agentic_is_refused(tmp_path):
    path = tmp_path / "rlvr.yaml"
    path.write_text(BASE_YAML.replace("pipeline: agentic", "pipeline: rlvr").split("environment:")[0])
    with pytest.raises(ConfigError, match="gigpo needs multi-turn episodes"):
        load_config(str(path), ["algorithm.advantage_estimator=gigpo", "data.train_path=/d.jsonl"])
