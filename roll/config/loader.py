"""Load a `JobConfig` from YAML plus dotted command-line overrides, and write one back as YAML.

    cfg = load_config("configs/quickstart/rlvr_grpo.yaml", ["actor_train.tensor_parallel=2"])

OmegaConf parses the YAML and resolves `${...}` interpolations (after the overrides, so an override
of `actor_train.model_path` also reaches `${actor_train.model_path}`). The typed tree is then built
by walking the dataclass schema here rather than by `OmegaConf.structured`: that gives one-line
errors naming the full dotted key, a "did you mean" for unknown keys, and lets `device_mapping`
hold range strings such as "0-7" that a structured `list[int]` node would refuse.
"""

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from roll.config.device_mapping import format_device_ranges
from roll.config.errors import ConfigError
from roll.config.pipeline import JobConfig
from roll.config.validate import validate_job
from roll.config.worker import WorkerConfig

# Fields whose raw YAML value is handed to the dataclass's own parser instead of being type-checked.
_PARSED_BY_DATACLASS = {(WorkerConfig, "device_mapping")}


def load_config(path: str, overrides: Sequence[str] = ()) -> JobConfig:
    """Read YAML at `path`, apply `key.sub=value` overrides, build and validate the `JobConfig`."""
    raw = _read_yaml(path)
    for override in overrides:
        _apply_override(raw, override)
    try:
        data = cast(dict[str, Any], OmegaConf.to_container(raw, resolve=True))  # a DictConfig gives a dict
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: cannot resolve an interpolation: {_first_line(err)}") from None
    cfg = build_config(data)
    validate_job(cfg)
    return cfg


def build_config(data: Mapping[str, Any]) -> JobConfig:
    """Build the typed tree from plain containers; unknown keys and wrong types raise `ConfigError`.

    Cross-field rules are not checked here; `load_config` runs `validate_job` afterwards."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"the config root must be a mapping of keys, got {type(data).__name__}")
    return _build_dataclass(JobConfig, data, path="")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config tree as plain dicts/lists/scalars (what `build_config` accepts back)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Any) -> str:
    """The resolved config as YAML; device lists are written as compact ranges ("0-7")."""
    data = config_to_dict(cfg)
    _compact_device_mappings(data)
    return OmegaConf.to_yaml(OmegaConf.create(data))


def _read_yaml(path: str) -> DictConfig:
    if not Path(path).is_file():
        raise ConfigError(f"config file {path!r} does not exist; pass the path of a YAML file")
    try:
        raw = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or _first_line(err)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if raw is None or (isinstance(raw, DictConfig) and raw._is_none()):
        return OmegaConf.create({})
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (e.g. `pipeline: rlvr`)")
    return raw


def _apply_override(raw: DictConfig, override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r} is not key=value; write e.g. actor_train.tensor_parallel=2")
    try:
        # Parse the value with OmegaConf's YAML rules (1e-6 is a float, [0, "2-3"] a list).
        parsed = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"])))
        value = parsed["value"]
        OmegaConf.update(raw, key, value, merge=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"override {override!r} cannot be applied: {_first_line(err)}") from None


def _build_dataclass(cls: type, data: Mapping[str, Any], path: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = _join(path, str(key))
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            if close:
                hint = f"; did you mean {_join(path, close[0])!r}?"
            else:
                hint = f"; valid keys here: {', '.join(fields)}"
            raise ConfigError(f"unknown key {dotted!r}{hint}")
        if (cls, key) in _PARSED_BY_DATACLASS:
            kwargs[key] = value
            continue
        if isinstance(value, Mapping) and _dataclass_in(hints[key]) is not None:
            value = _merge_onto_default(fields[key], value)
        kwargs[key] = _coerce(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(_prefix_message(path, str(err), fields)) from None


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(inner, value, path)
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{path}={value!r} must be a mapping of {tp.__name__} keys (or null if optional)"
            )
        return _build_dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}={value!r} must be a list, e.g. [{_example(args[0])}]")
        return [_coerce(args[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}={value!r} must be a mapping, e.g. {{key: value}}")
        return dict(value)
    return _coerce_scalar(tp, value, path)


def _coerce_scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r} must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # plain YAML 1.1 reads "1e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}={value!r} must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}={value!r} must be a string")
    raise TypeError(f"config schema type {tp!r} at {path} is not supported by the loader")


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass type of a field typed `X` or `Optional[X]`, else None."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                return arg
    return None


def _merge_onto_default(field: dataclasses.Field, value: Mapping[str, Any]) -> dict[str, Any]:
    """A key absent from the YAML keeps the schema default, also inside a nested default instance
    (e.g. `actor_infer` defaults to the native strategy even when only its model_path is given)."""
    if field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = field.default
    if not dataclasses.is_dataclass(default) or isinstance(default, type):
        return dict(value)
    return _deep_merge(dataclasses.asdict(default), value)


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _prefix_message(path: str, message: str, fields: Mapping[str, Any]) -> str:
    """Make a dataclass's own error name the full dotted key, e.g. `micro_batch_size=0 ...` raised
    by the WorkerConfig at `critic` becomes `critic.micro_batch_size=0 ...`."""
    if not path:
        return message
    parent, _, last = path.rpartition(".")
    if message.startswith(f"{last}.") or message.startswith(f"{last}:"):
        return _join(parent, message)
    head = message.split("=", 1)[0].split(":", 1)[0].split(" ", 1)[0]
    return f"{path}.{message}" if head in fields else f"{path}: {message}"


def _compact_device_mappings(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "device_mapping" and isinstance(value, list):
                node[key] = format_device_ranges(value)
            else:
                _compact_device_mappings(value)
    elif isinstance(node, list):
        for item in node:
            _compact_device_mappings(item)


def _example(tp: Any) -> str:
    return {int: "0, 1", float: "0.5", str: '"text"'}.get(tp, "...")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
