"""Loading YAML configs: every shipped config, overrides, defaults, interpolation and YAML round trip."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from roll.config.loader import build_config, config_to_dict, config_to_yaml, load_config
from roll.config.pipeline import JobConfig
from roll.config.worker import WorkerConfig

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))

MINIMAL_SFT = """
pipeline: sft
actor_train:
  model_path: /models/base
  optimizer: {lr: 1.0e-5}
data: {train_path: /data/sft.jsonl}
"""


@pytest.fixture()
def sft_yaml(tmp_path) -> Path:
    path = tmp_path / "sft.yaml"
    path.write_text(MINIMAL_SFT)
    return path


def test_configs_directory_is_not_empty():
    assert len(SHIPPED_CONFIGS) >= 6


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[str(p.relative_to(REPO)) for p in SHIPPED_CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(str(path))
    assert isinstance(cfg, JobConfig)
    # Every key written in the file reached the typed tree with the value written there.
    written = yaml.safe_load(path.read_text())
    assert cfg.pipeline == written["pipeline"]
    assert cfg.max_steps == written["max_steps"]
    assert cfg.actor_train.model_path == written["actor_train"]["model_path"]


def test_absent_keys_take_dataclass_defaults(sft_yaml):
    cfg = load_config(str(sft_yaml))
    assert cfg.seed == JobConfig().seed
    assert cfg.generation.temperature == 1.0
    assert cfg.actor_train.tensor_parallel == 1
    assert cfg.actor_train.optimizer.adam_beta2 == 0.999
    assert cfg.reference is None and cfg.critic is None


def test_partial_role_mapping_keeps_the_role_default():
    # actor_infer's default strategy is native, not WorkerConfig's megatron_train.
    cfg = build_config({"actor_infer": {"model_path": "/m"}})
    assert cfg.actor_infer.strategy.name == "native"
    assert cfg.actor_infer.model_path == "/m"


def test_overrides_parse_yaml_values(sft_yaml):
    cfg = load_config(
        str(sft_yaml),
        [
            "actor_train.optimizer.lr=3e-4",
            "actor_train.device_mapping=[0, '2-3']",
            "actor_train.micro_batch_size=2",
            "train_batch_size=6",
            "exp_name=run7",
            "data.val_path=null",
            "actor_train.strategy.args={foo: 1}",
        ],
    )
    assert cfg.actor_train.optimizer.lr == pytest.approx(3e-4)
    assert cfg.actor_train.device_mapping == [0, 2, 3]
    assert cfg.actor_train.data_parallel == 3
    assert cfg.train_batch_size == 6
    assert cfg.exp_name == "run7"
    assert cfg.actor_train.strategy.args == {"foo": 1}


def test_override_reaches_interpolations(tmp_path):
    path = REPO / "configs/quickstart/rlvr_grpo.yaml"
    cfg = load_config(str(path), ["actor_train.model_path=/elsewhere"])
    assert cfg.actor_infer.model_path == "/elsewhere"


def test_override_can_fill_an_optional_role_and_index_a_list(tmp_path):
    path = REPO / "configs/quickstart/rlvr_grpo.yaml"
    cfg = load_config(
        str(path),
        ["algorithm.kl_coef=0.05", "reference.model_path=/ref", "reward.functions.0.weight=2.5"],
    )
    assert isinstance(cfg.reference, WorkerConfig)
    assert cfg.reference.model_path == "/ref"
    assert cfg.reference.optimizer is None
    assert cfg.reward.functions[0].weight == 2.5


def test_override_can_remove_an_optional_role():
    path = REPO / "configs/quickstart/rlvr_ppo.yaml"
    cfg = load_config(str(path), ["reference=null", "algorithm.kl_coef=0"])
    assert cfg.reference is None


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[p.name for p in SHIPPED_CONFIGS])
def test_yaml_round_trip(tmp_path, path):
    cfg = load_config(str(path))
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(config_to_yaml(cfg))
    assert config_to_dict(load_config(str(dumped))) == config_to_dict(cfg)


def test_yaml_writes_device_ranges():
    cfg = load_config(str(REPO / "configs/cluster/qwen2.5-32b_grpo_32gpu.yaml"))
    data = yaml.safe_load(config_to_yaml(cfg))
    assert data["actor_infer"]["device_mapping"] == ["16-31"]
    assert cfg.actor_infer.device_mapping == list(range(16, 32))


def test_config_to_dict_is_plain():
    cfg = load_config(str(REPO / "configs/quickstart/rlvr_ppo.yaml"))
    data = config_to_dict(cfg)

    def assert_plain(node):
        assert not dataclasses.is_dataclass(node)
        if isinstance(node, dict):
            for value in node.values():
                assert_plain(value)
        elif isinstance(node, list):
            for value in node:
                assert_plain(value)

    assert_plain(data)
    assert data["critic"]["optimizer"]["lr"] == cfg.critic.optimizer.lr


def test_jobconfig_accepts_nested_dicts_in_code():
    cfg = JobConfig(actor_train={"model_path": "/m", "device_mapping": "0-3"}, algorithm={"kl_coef": 0.1})
    assert cfg.actor_train.device_mapping == [0, 1, 2, 3]
    assert cfg.algorithm.kl_coef == 0.1
