"""Every config field has a one-line doc, configs/README.md carries the current key reference, and
every key written in a shipped YAML is a documented field."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from roll.config.docs import config_classes, field_docs, replace_reference
from roll.config.pipeline import JobConfig

REPO = Path(__file__).resolve().parents[2]
README = REPO / "configs" / "README.md"
SHIPPED_CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
CLASSES = list(config_classes())


def test_schema_reaches_every_config_class():
    names = {cls.__name__ for cls in CLASSES}
    assert names == {
        "JobConfig", "WorkerConfig", "OptimizerConfig", "StrategyConfig", "GenerationConfig",
        "AlgorithmConfig", "DataConfig", "RewardConfig", "RewardFunctionConfig", "EnvironmentConfig",
        "EnvSpec", "ToolSpec", "ClusterConfig", "TimeoutConfig",
    }  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_every_field_has_a_one_line_doc(cls):
    docs = field_docs(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    for name, doc in docs.items():
        assert doc, f"{cls.__name__}.{name} has no docstring"
        assert "\n" not in doc, f"{cls.__name__}.{name} docstring spans several lines"


def test_field_docs_reads_the_literal_under_each_field():
    docs = field_docs(JobConfig)
    assert (
        docs["pipeline"] == "Which pipeline runs: rlvr | sft | agentic (multi-turn episodes in environments)."
    )
    assert docs["seed"] == "Global seed (data order, init, sampling)."


def test_readme_key_reference_is_current():
    text = README.read_text()
    assert replace_reference(text) == text, "run: python -m roll.config.docs --write configs/README.md"


def _documented_keys() -> set[tuple[str, str]]:
    """(class name, key) pairs from the README tables, parsed from the markdown."""
    documented, current = set(), None
    for line in README.read_text().splitlines():
        if line.startswith("### "):
            current = line.split()[1]
        elif current and line.startswith("| `"):
            key, meaning = line.split("|")[1].strip().strip("`"), line.split("|")[4].strip()
            if meaning:
                documented.add((current, key))
    return documented


def _used_keys(cls: type, data: dict) -> set[tuple[str, str]]:
    """(class name, key) for every key in `data` and its nested config mappings."""
    used = set()
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        used.add((cls.__name__, key))
        tp = hints.get(key)
        nested = [arg for arg in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(arg)]
        if nested and isinstance(value, dict):
            used |= _used_keys(nested[0], value)
        elif typing.get_origin(tp) is list and isinstance(value, list):
            (item_type,) = typing.get_args(tp)
            if dataclasses.is_dataclass(item_type):
                for item in value:
                    used |= _used_keys(item_type, item)
    return used


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[p.name for p in SHIPPED_CONFIGS])
def test_every_key_in_shipped_yaml_is_documented(path):
    used = _used_keys(JobConfig, yaml.safe_load(path.read_text()))
    assert used - _documented_keys() == set()
    assert len(used) > 10
