"""A table of bad configs: each must fail with a one-line `ConfigError` naming its specific rule."""

from pathlib import Path

import pytest

from roll.config.errors import ConfigError
from roll.config.loader import load_config

# A valid RLVR job: actor_train TP2 on 8 devices (DP4, micro 2), 8 prompts x 4 samples = 32
# responses, mini-batches of 16.
BASE_YAML = """
pipeline: rlvr
rollout_batch_size: 8
actor_train:
  model_path: /models/policy
  tensor_parallel: 2
  micro_batch_size: 2
  device_mapping: ["0-7"]
  optimizer: {lr: 1.0e-6}
actor_infer:
  model_path: ${actor_train.model_path}
  strategy: {name: sglang}
  device_mapping: ["0-7"]
generation: {num_samples: 4}
algorithm: {advantage_estimator: grpo, mini_batch_size: 16}
data: {train_path: /data/train.jsonl}
"""
CRITIC = "critic={model_path: /models/policy, device_mapping: ['0-7'], optimizer: {lr: 1.0e-5}}"
REFERENCE = "reference={model_path: /models/policy, device_mapping: ['0-7']}"

BAD_CONFIGS = [
    # Parallel layout against devices.
    (
        [
            "actor_train.tensor_parallel=4",
            "actor_train.pipeline_parallel=2",
            "actor_train.device_mapping=0-11",
        ],
        "actor_train: tensor_parallel(4) x pipeline_parallel(2) = 8 does not divide the 12 GPUs in device_mapping",
    ),
    (
        ["actor_train.context_parallel=3"],
        "actor_train: tensor_parallel(2) x pipeline_parallel(1) x context_parallel(3) = 6 does not divide the 8 GPUs",
    ),
    (
        ["actor_infer.tensor_parallel=3"],
        "actor_infer: tensor_parallel(3) x pipeline_parallel(1) = 3 does not divide",
    ),
    (
        ["actor_train.expert_parallel=3"],
        "actor_train: expert_parallel(3) does not divide data_parallel(4) x context_parallel(1) = 4",
    ),
    (["actor_infer.expert_parallel=2"], "actor_infer: expert_parallel(2) does not divide tensor_parallel(1)"),
    (["actor_infer.context_parallel=2"], "apply to training roles only"),
    (["actor_train.tensor_parallel=0"], "actor_train.tensor_parallel=0 must be an integer >= 1"),
    (
        ["actor_train.tensor_parallel=1", "actor_train.sequence_parallel=true"],
        "actor_train.sequence_parallel=true needs tensor_parallel >= 2",
    ),
    (
        ["actor_train.virtual_pipeline_parallel=2"],
        "actor_train.virtual_pipeline_parallel=2 needs pipeline_parallel >= 2",
    ),
    # Batch sizes against data-parallel sizes and micro-batches.
    (
        ["actor_train.micro_batch_size=3"],
        "actor_train: algorithm.mini_batch_size(16) is not a multiple of data_parallel(4) x micro_batch_size(3) = 12",
    ),
    (
        ["algorithm.mini_batch_size=12"],
        "rollout_batch_size(8) x generation.num_samples(4) = 32 responses per step is not a multiple of "
        "algorithm.mini_batch_size(12)",
    ),
    (["generation.num_samples=1"], "advantage_estimator=grpo needs generation.num_samples >= 2 (got 1)"),
    (
        ["pipeline=sft", "train_batch_size=6"],
        "actor_train: train_batch_size(6) is not a multiple of data_parallel(4) x micro_batch_size(2) = 8",
    ),
    (
        ["algorithm.advantage_estimator=gae", CRITIC, "critic.micro_batch_size=3"],
        "critic: algorithm.mini_batch_size(16) is not a multiple of data_parallel(8) x micro_batch_size(3) = 24",
    ),
    # Which roles an algorithm needs.
    (
        ["algorithm.advantage_estimator=gae"],
        "algorithm.advantage_estimator=gae needs a critic, which is null",
    ),
    ([CRITIC], "critic is set but algorithm.advantage_estimator=grpo does not use it"),
    (["algorithm.kl_coef=0.1"], "algorithm.kl_coef=0.1 (adaptive_kl=False) needs a reference model"),
    ([REFERENCE], "reference is set but algorithm.kl_coef=0"),
    (
        [REFERENCE, "algorithm.kl_coef=0.1", "reference.optimizer.lr=1e-6"],
        "reference.optimizer is set but the reference is frozen",
    ),
    (["pipeline=sft", CRITIC], "pipeline=sft trains actor_train only but critic is set"),
    (["actor_infer.optimizer={lr: 1e-6}"], "actor_infer.optimizer is set but actor_infer only generates"),
    (["actor_train.optimizer=null"], "actor_train.optimizer is null but actor_train is trained"),
    # Strategies and model paths.
    (["actor_infer.strategy.name=vllm"], "actor_infer.strategy.name='vllm' cannot run the actor_infer role"),
    (
        ["actor_train.strategy.name=sglang"],
        "actor_train.strategy.name='sglang' cannot run the actor_train role",
    ),
    (["actor_train.model_path=''"], "actor_train.model_path is empty"),
    # Unknown keys, at every depth, with a suggestion.
    (
        ["actor_train.tensor_paralel=2"],
        "unknown key 'actor_train.tensor_paralel'; did you mean 'actor_train.tensor_parallel'?",
    ),
    (["max_step=3"], "unknown key 'max_step'; did you mean 'max_steps'?"),
    (["algorithm.kl_coeff=0.1"], "unknown key 'algorithm.kl_coeff'; did you mean 'algorithm.kl_coef'?"),
    (
        ["actor_train.optimizer.learning_rate=1"],
        "unknown key 'actor_train.optimizer.learning_rate'; valid keys here: lr,",
    ),
    (
        ["reward.functions=[{nme: math_exact}]"],
        "unknown key 'reward.functions[0].nme'; did you mean 'reward.functions[0].name'?",
    ),
    # Types.
    (["actor_train.tensor_parallel=two"], "actor_train.tensor_parallel='two' must be an integer"),
    (["actor_train.recompute=maybe"], "actor_train.recompute='maybe' must be true or false"),
    (["reward=5"], "reward=5 must be a mapping of RewardConfig keys"),
    (["generation.stop_token_ids=5"], "generation.stop_token_ids=5 must be a list"),
    (["algorithm.gamma=high"], "algorithm.gamma='high' must be a number"),
    # device_mapping.
    (["actor_train.device_mapping=[0-x]"], "actor_train.device_mapping: cannot parse '0-x'"),
    (["actor_train.device_mapping=7-3"], "actor_train.device_mapping: range '7-3' is empty (end < start)"),
    (
        ["actor_train.device_mapping=[0, '0-1']"],
        "actor_train.device_mapping lists devices [0] more than once",
    ),
    (["actor_train.device_mapping=[]"], "actor_train.device_mapping is empty"),
    # Per-field rules in the dataclasses, named with their full dotted key.
    (["actor_train.optimizer.lr=0"], "actor_train.optimizer.lr=0.0 must be > 0"),
    (["actor_train.optimizer.lr_schedule=cosin"], "actor_train.optimizer.lr_schedule='cosin' is not one of"),
    (["actor_train.dtype=bf32"], "actor_train.dtype='bf32' is not one of auto|bf16|fp16|fp32"),
    (["algorithm.advantage_estimator=gpro"], "algorithm.advantage_estimator='gpro' is not one of"),
    (["algorithm.loss_agg_mode=token_mean"], "did you mean 'token-mean'?"),
    (["algorithm.dual_clip_c=0.5"], "algorithm.dual_clip_c=0.5 must be > 1"),
    (
        ["algorithm.dual_clip_c=3", "algorithm.policy_loss=gspo"],
        "dual_clip_c=3.0 applies to policy_loss=ppo only",
    ),
    (["algorithm.gamma=1.5"], "algorithm.gamma=1.5 must be in [0, 1]"),
    (["generation.top_p=0"], "generation.top_p=0.0 must be in (0, 1]"),
    (["generation.top_k=0"], "generation.top_k=0 must be -1 (disabled) or >= 1"),
    (["generation.temperature=-1"], "generation.temperature=-1.0 must be >= 0"),
    (["pipeline=ppo"], "pipeline='ppo' is not one of rlvr|sft|agentic"),
    (["max_steps=0"], "max_steps=0 must be >= 1"),
    (["reward.functions=[]"], "reward.functions is empty"),
    (["reward.timeout_s=0"], "reward.timeout_s=0.0 must be > 0"),
    (["data.template=jinja"], "data.template='jinja' is not one of plain|chat"),
    (["data.train_path=''"], "data.train_path is empty"),
    (["val_every=5"], "val_every=5 needs data.val_path, which is null"),
    (
        ["actor_infer.strategy.args={mem_fracton_static: 0.5}"],
        "actor_infer.strategy.args: 'mem_fracton_static' is not a field of sglang",
    ),
    # Placement on the declared cluster.
    (
        ["cluster={num_nodes: 1, gpus_per_node: 4}"],
        "actor_train.device_mapping uses device ids [4, 5, 6, 7] but cluster.num_nodes(1) x gpus_per_node(4) = 4 GPUs",
    ),
    (
        ["cluster={num_nodes: 2, gpus_per_node: 4}", "actor_infer.tensor_parallel=8"],
        "actor_infer: tensor_parallel(8) group on devices [0, 1, 2, 3, 4, 5, 6, 7] spans nodes [0, 1]",
    ),
    (
        ["cluster={num_nodes: 3, gpus_per_node: 3}", "actor_train.device_mapping=1-8"],
        "actor_train: tensor_parallel(2) group on devices [5, 6] spans nodes [1, 2]",
    ),
    (["cluster={gpus_per_node: 0}"], "cluster.gpus_per_node=0 must be >= 1"),
    # Overrides themselves.
    (["actor_train.tensor_parallel"], "override 'actor_train.tensor_parallel' is not key=value"),
    (["actor_infer.model_path=${actor_train.model_pth}"], "cannot resolve an interpolation"),
]


@pytest.fixture(scope="module")
def base_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "base.yaml"
    path.write_text(BASE_YAML)
    return path


def test_base_config_is_valid(base_yaml):
    cfg = load_config(str(base_yaml))
    assert cfg.actor_train.data_parallel == 4
    assert cfg.actor_infer.model_path == "/models/policy"


def test_table_has_at_least_30_distinct_rules():
    assert len({fragment for _, fragment in BAD_CONFIGS}) >= 30


@pytest.mark.parametrize(("overrides", "fragment"), BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_config_names_its_rule(base_yaml, overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(str(base_yaml), overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pipeline: rlvr\nactor_train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+, column \d+") as info:
        load_config(str(path))
    assert "\n" not in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(str(path))
