"""The README's "Define an environment" example works as printed: the env module imports, the YAML
validates against its signature (and a typo in its args is one clear line), and episodes play."""

import re
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from roll.config.errors import ConfigError
from roll.config.loader import load_config
from roll.envs.registry import ENVS

REPO = Path(__file__).resolve().parents[2]


def readme_blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Define an environment", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (module_code,) = readme_blocks("python")
    (tmp_path / "my_envs.py").write_text(module_code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_envs", None)


def write_config(tmp_path: Path, **env_args) -> str:
    (yaml_block,) = readme_blocks("yaml")
    base = OmegaConf.load(REPO / "configs/agentic/guess_number.yaml")
    merged = OmegaConf.merge(base, OmegaConf.create(yaml_block))
    if env_args:
        merged.environment.envs[0].args = env_args
    path = tmp_path / "my_nim.yaml"
    OmegaConf.save(merged, path)
    return str(path)


def test_readme_env_validates_and_plays(user_module):
    cfg = load_config(write_config(user_module))
    assert cfg.environment.envs[0].type == "my_envs:Nim" and cfg.environment.max_turns == 8
    env = ENVS.build("my_envs:Nim", cfg.environment.envs[0].args)
    observation, info = env.reset(3)
    stones = int(observation.split()[0])
    assert 5 <= stones <= 15 and info["state"] == str(stones)
    bad = env.step("take four")
    assert bad.info["invalid_action"] and bad.reward == pytest.approx(-0.1) and not bad.terminated
    # Taking 1 stone at a time always ends the game within max_stones steps, won or lost.
    for _ in range(15):
        result = env.step("1")
        if result.terminated:
            break
    assert (
        result.terminated and result.reward in (0.0, 1.0) and result.info["success"] == (result.reward == 1.0)
    )


def test_readme_env_arg_typo_is_one_line(user_module):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(user_module, min_stone=5))
    message = str(err.value)
    assert "\n" not in message
    assert "'my_envs:Nim'" in message and "min_stone" in message and "min_stones" in message
