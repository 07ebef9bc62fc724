"""The `roll` command line: train, plan and convert.

    roll train CONFIG [key=value ...] [--validate] [--resume]
    roll plan CONFIG [key=value ...]
    roll convert hf-to-mcore --hf DIR --out DIR [--tp N] [--pp N]
    roll convert mcore-to-hf --mcore DIR --out DIR

`python -m roll ...` is the same. A bad config prints `error: <one line>` on stderr and exits 2
before anything starts. This is the user-facing entry point, so it writes to stdout directly.
"""

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from roll.config.device_mapping import format_device_ranges
from roll.config.errors import ConfigError
from roll.config.loader import config_to_yaml, load_config
from roll.config.pipeline import JobConfig
from roll.config.validate import roles_in_use

# Entry points are imported only when used, so `roll train --validate` and `roll plan` need
# neither Ray nor Megatron. Each maps to "module:function"; a pipeline's function is called as
# `run(cfg: JobConfig, *, resume: bool)`, a converter's as `main(args: argparse.Namespace)`.
PIPELINE_RUNNERS = {
    "rlvr": "roll.pipelines.rlvr:run",
    "sft": "roll.pipelines.sft:run",
    "agentic": "roll.pipelines.agentic:run",
}
CONVERTERS = {
    "hf-to-mcore": "roll.models.convert:hf_to_mcore_main",
    "mcore-to-hf": "roll.models.convert:mcore_to_hf_main",
}
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing failure reported as one `error:` line with exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `roll` command; returns the exit status (also used as the console script)."""
    parser = _parser()
    # Overrides may come after flags (`train CONFIG --validate a.b=1`), which argparse leaves over.
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.handler(args)
    except (ConfigError, CliError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE


def _train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.validate:
        print(config_to_yaml(cfg), end="")
        return 0
    run = _import_entry_point(PIPELINE_RUNNERS[cfg.pipeline])
    run(cfg, resume=args.resume)
    return 0


def _plan(args: argparse.Namespace) -> int:
    print(format_plan(load_config(args.config, args.overrides)), end="")
    return 0


def _convert(args: argparse.Namespace) -> int:
    convert = _import_entry_point(CONVERTERS[args.direction])
    try:
        convert(args)
    except (ValueError, FileNotFoundError) as err:  # bad layout or paths: one line, no traceback
        raise CliError(str(err)) from None
    return 0


def format_plan(cfg: JobConfig) -> str:
    """A table of every role the pipeline starts: devices and TP/PP/CP/EP/DP sizes, then batch sizes."""
    header = ("role", "strategy", "devices", "n", "TP", "PP", "VPP", "CP", "EP", "DP", "micro")
    rows: list[tuple[object, ...]] = [header]
    for role, worker, _ in roles_in_use(cfg):
        devices = ",".join(str(r) for r in format_device_ranges(worker.device_mapping))
        rows.append(
            (role, worker.strategy.name, devices, worker.world_size, worker.tensor_parallel,
             worker.pipeline_parallel, worker.virtual_pipeline_parallel or "-", worker.context_parallel,
             worker.expert_parallel, worker.data_parallel, worker.micro_batch_size)
        )  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    for role, worker, is_rollout in roles_in_use(cfg):
        if is_rollout:
            replicas = worker.world_size // worker.tensor_parallel
            lines.append(
                f"{role}: {replicas} engine replica(s) of tensor_parallel {worker.tensor_parallel}; "
                "requests are balanced over replicas by outstanding tokens"
            )
    if cfg.environment is not None:
        env = cfg.environment
        names = ", ".join(spec.name for spec in env.envs)
        lines.append(
            f"environment: {env.num_workers} CPU worker(s) x up to {env.envs_per_worker} episodes at once; "
            f"envs {names}; <= {env.max_turns} turns, <= {env.max_context_tokens} tokens per episode"
        )
    if cfg.pipeline in ("rlvr", "agentic"):
        responses = cfg.rollout_batch_size * cfg.generation.num_samples
        optimizer_steps = responses // cfg.algorithm.mini_batch_size * cfg.algorithm.ppo_epochs
        unit = ("seed groups", "episodes") if cfg.pipeline == "agentic" else ("prompts", "responses")
        lines.append(
            f"per step: {cfg.rollout_batch_size} {unit[0]} x {cfg.generation.num_samples} samples = "
            f"{responses} {unit[1]}, {optimizer_steps} optimizer step(s) of "
            f"{cfg.algorithm.mini_batch_size} {unit[1]}"
        )
    else:
        lines.append(f"per step: {cfg.train_batch_size} samples, 1 optimizer step")
    return "\n".join(lines) + "\n"


def _import_entry_point(target: str) -> Callable[..., Any]:
    module_name, _, function_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise CliError(f"cannot import {module_name}: {err}; is ROLL fully installed?") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise CliError(f"{module_name} has no function {function_name}()")
    return function


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roll", description="ROLL: RL post-training of LLMs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="run a pipeline from a YAML config")
    _add_config_args(train)
    train.add_argument("--validate", action="store_true", help="resolve, validate and print; start nothing")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    train.set_defaults(handler=_train)

    plan = commands.add_parser("plan", help="print the per-role device and parallel layout")
    _add_config_args(plan)
    plan.set_defaults(handler=_plan)

    convert = commands.add_parser("convert", help="convert checkpoints between HF and Megatron-Core")
    directions = convert.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    to_mcore = directions.add_parser("hf-to-mcore", help="HF safetensors -> Megatron-Core checkpoint")
    to_mcore.add_argument("--hf", required=True, metavar="DIR", help="HF model directory")
    to_mcore.add_argument("--out", required=True, metavar="DIR", help="output checkpoint directory")
    to_mcore.add_argument("--tp", type=int, default=1, metavar="N", help="tensor-parallel size")
    to_mcore.add_argument("--pp", type=int, default=1, metavar="N", help="pipeline-parallel size")
    to_hf = directions.add_parser("mcore-to-hf", help="Megatron-Core checkpoint -> HF safetensors")
    to_hf.add_argument("--mcore", required=True, metavar="DIR", help="Megatron-Core checkpoint directory")
    to_hf.add_argument("--out", required=True, metavar="DIR", help="output HF model directory")
    convert.set_defaults(handler=_convert)
    return parser


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="YAML config file")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. actor_train.tensor_parallel=2",
    )
