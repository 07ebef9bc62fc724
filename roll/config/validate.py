"""Cross-field checks of a `JobConfig`, run before any Ray actor starts.

Each dataclass validates its own fields in `__post_init__`; the rules here span several fields or
sub-configs: parallel sizes against each role's devices, batch sizes against data-parallel sizes
and micro-batches, and which roles an algorithm needs. Every failure is one `ConfigError` line
naming the role, the fields, their values, the rule and a fix.

Policy on optional roles: a role is started exactly when it is configured, and configured exactly
when the algorithm uses it. `reference` is never derived from `actor_train` behind the user's back:
KL without a `reference:` section is an error whose fix says what to add.
"""

from roll.config.cluster import ClusterConfig, replica_groups
from roll.config.errors import ConfigError
from roll.config.pipeline import JobConfig
from roll.config.worker import WorkerConfig
from roll.envs.registry import ENVS, TOOLS
from roll.strategies.sglang_server_args import check_sglang_args

TRAIN_STRATEGIES = ("megatron_train",)
ROLLOUT_STRATEGIES = ("native", "sglang")
# Estimators whose baseline is computed from the other responses of the same prompt.
_GROUP_ESTIMATORS = ("grpo", "rloo", "reinforce_plus_plus_baseline", "gigpo")


def validate_job(cfg: JobConfig) -> None:
    """Raise `ConfigError` on the first cross-field rule `cfg` breaks."""
    for role, worker, is_rollout in roles_in_use(cfg):
        _check_strategy(role, worker, ROLLOUT_STRATEGIES if is_rollout else TRAIN_STRATEGIES)
        if worker.strategy.name == "sglang":
            try:
                check_sglang_args(worker.strategy.args)
            except ValueError as err:
                raise ConfigError(f"{role}.strategy.args: {err}") from None
        _check_layout(role, worker, is_rollout=is_rollout)
        if cfg.cluster is not None:
            _check_placement(role, worker, cfg.cluster)
    if cfg.pipeline in ("rlvr", "agentic"):
        _check_rlvr(cfg)
    else:
        _check_sft(cfg)
    if cfg.pipeline == "agentic":
        _check_agentic(cfg)
        return
    if cfg.environment is not None:
        raise ConfigError(
            f"environment is set but pipeline={cfg.pipeline} does not use it; "
            "remove the environment: section or set pipeline=agentic"
        )
    if cfg.algorithm.advantage_estimator == "gigpo":
        raise ConfigError(
            "algorithm.advantage_estimator=gigpo needs multi-turn episodes; use pipeline=agentic or grpo"
        )
    if not cfg.data.train_path:
        raise ConfigError("data.train_path is empty; set it to a jsonl or parquet file of training rows")
    if cfg.val_every > 0 and not cfg.data.val_path:
        raise ConfigError(
            f"val_every={cfg.val_every} needs data.val_path, which is null; set data.val_path or val_every=0"
        )


def roles_in_use(cfg: JobConfig) -> list[tuple[str, WorkerConfig, bool]]:
    """(role name, its config, whether it is a rollout role) for every role the pipeline starts."""
    roles = [("actor_train", cfg.actor_train, False)]
    if cfg.pipeline in ("rlvr", "agentic"):
        roles.append(("actor_infer", cfg.actor_infer, True))
    for name in ("reference", "critic"):
        worker = getattr(cfg, name)
        if worker is not None:
            roles.append((name, worker, False))
    return roles


def _check_strategy(role: str, worker: WorkerConfig, allowed: tuple[str, ...]) -> None:
    name = worker.strategy.name
    if name not in allowed:
        raise ConfigError(
            f"{role}.strategy.name={name!r} cannot run the {role} role; use one of {'|'.join(allowed)}"
        )
    if not worker.model_path:
        raise ConfigError(f"{role}.model_path is empty; set it to a Hugging Face model directory")


def _check_layout(role: str, worker: WorkerConfig, *, is_rollout: bool) -> None:
    tp, pp, cp, ep = (
        worker.tensor_parallel,
        worker.pipeline_parallel,
        worker.context_parallel,
        worker.expert_parallel,
    )
    devices = worker.world_size
    product = f"tensor_parallel({tp}) x pipeline_parallel({pp})" + (
        f" x context_parallel({cp})" if cp > 1 else ""
    )
    if devices % worker.model_parallel_size:
        raise ConfigError(
            f"{role}: {product} = {worker.model_parallel_size} does not divide the {devices} GPUs in "
            f"device_mapping; use a multiple of {worker.model_parallel_size} devices or smaller parallel sizes"
        )
    if is_rollout:
        if cp > 1 or worker.virtual_pipeline_parallel is not None:
            raise ConfigError(
                f"{role}: context_parallel({cp}) / virtual_pipeline_parallel"
                f"({worker.virtual_pipeline_parallel}) apply to training roles only; "
                "set context_parallel=1 and virtual_pipeline_parallel=null"
            )
        if tp % ep:
            raise ConfigError(
                f"{role}: expert_parallel({ep}) does not divide tensor_parallel({tp}); the rollout engine "
                "shards experts inside the tensor-parallel group, so pick an expert_parallel that divides it"
            )
        if worker.optimizer is not None:
            raise ConfigError(f"{role}.optimizer is set but {role} only generates; set {role}.optimizer=null")
        return
    # Megatron forms expert groups of EP ranks out of the DP x CP ranks of each TP x PP slice.
    dp_cp = worker.data_parallel * cp
    if dp_cp % ep:
        raise ConfigError(
            f"{role}: expert_parallel({ep}) does not divide data_parallel({worker.data_parallel}) x "
            f"context_parallel({cp}) = {dp_cp}; pick an expert_parallel that divides {dp_cp} or add devices"
        )


def _check_placement(role: str, worker: WorkerConfig, cluster: ClusterConfig) -> None:
    beyond = [d for d in worker.device_mapping if d >= cluster.num_gpus]
    if beyond:
        raise ConfigError(
            f"{role}.device_mapping uses device ids {beyond[:4]} but cluster.num_nodes({cluster.num_nodes}) x "
            f"gpus_per_node({cluster.gpus_per_node}) = {cluster.num_gpus} GPUs have ids 0-{cluster.num_gpus - 1}; "
            "lower the ids or raise cluster.num_nodes"
        )
    # Rank order puts tensor parallelism innermost: a TP group (a rollout replica) is consecutive devices.
    for group in replica_groups(worker.device_mapping, worker.tensor_parallel):
        nodes = sorted({cluster.node_of(d) for d in group})
        if len(nodes) > 1:
            raise ConfigError(
                f"{role}: tensor_parallel({worker.tensor_parallel}) group on devices {group} spans nodes {nodes} "
                f"(gpus_per_node={cluster.gpus_per_node}); TP traffic must stay inside a node: align "
                "device_mapping to node boundaries or lower tensor_parallel"
            )


def _check_rlvr(cfg: JobConfig) -> None:
    alg, gen = cfg.algorithm, cfg.generation
    responses = cfg.rollout_batch_size * gen.num_samples
    if alg.advantage_estimator in _GROUP_ESTIMATORS and gen.num_samples < 2:
        raise ConfigError(
            f"algorithm.advantage_estimator={alg.advantage_estimator} needs generation.num_samples >= 2 "
            f"(got {gen.num_samples}): a group of one response has no baseline; set e.g. num_samples=8"
        )
    if responses % alg.mini_batch_size:
        raise ConfigError(
            f"rollout_batch_size({cfg.rollout_batch_size}) x generation.num_samples({gen.num_samples}) = "
            f"{responses} responses per step is not a multiple of algorithm.mini_batch_size"
            f"({alg.mini_batch_size}); pick a mini_batch_size that divides {responses}"
        )
    _check_trainable("actor_train", cfg.actor_train, "algorithm.mini_batch_size", alg.mini_batch_size)
    if alg.needs_critic and cfg.critic is None:
        raise ConfigError(
            f"algorithm.advantage_estimator={alg.advantage_estimator} needs a critic, which is null; "
            "add a critic: section (value model, megatron_train, with an optimizer) or use grpo"
        )
    if cfg.critic is not None and not alg.needs_critic:
        raise ConfigError(
            f"critic is set but algorithm.advantage_estimator={alg.advantage_estimator} does not use it; "
            "remove the critic: section or set algorithm.advantage_estimator=gae"
        )
    if cfg.critic is not None:
        _check_trainable("critic", cfg.critic, "algorithm.mini_batch_size", alg.mini_batch_size)
    if alg.needs_reference and cfg.reference is None:
        raise ConfigError(
            f"algorithm.kl_coef={alg.kl_coef} (adaptive_kl={alg.adaptive_kl}) needs a reference model, "
            "which is null; add a reference: section (actor_train's model_path, no optimizer) or set "
            "algorithm.kl_coef=0"
        )
    if cfg.reference is not None and not alg.needs_reference:
        raise ConfigError(
            "reference is set but algorithm.kl_coef=0 and adaptive_kl=false never use it; "
            "remove the reference: section or set algorithm.kl_coef > 0"
        )
    if cfg.reference is not None and cfg.reference.optimizer is not None:
        raise ConfigError(
            "reference.optimizer is set but the reference is frozen; set reference.optimizer=null"
        )
    if alg.dual_clip_c is not None and alg.policy_loss != "ppo":
        raise ConfigError(
            f"algorithm.dual_clip_c={alg.dual_clip_c} applies to policy_loss=ppo only (got "
            f"{alg.policy_loss}); set algorithm.dual_clip_c=null"
        )


def _check_agentic(cfg: JobConfig) -> None:
    env_cfg = cfg.environment
    if env_cfg is None:
        raise ConfigError(
            "pipeline=agentic needs an environment: section, e.g. environment: {envs: [{type: guess_number}]}"
        )
    for i, spec in enumerate(env_cfg.envs):
        try:
            ENVS.check_args(spec.type, spec.args)
            for tool in spec.tools:
                TOOLS.check_args(tool.type, tool.args)
        except ValueError as err:
            raise ConfigError(f"environment.envs[{i}] ({spec.name}): {err}") from None
    if env_cfg.max_context_tokens <= cfg.generation.max_new_tokens:
        raise ConfigError(
            f"environment.max_context_tokens({env_cfg.max_context_tokens}) must exceed "
            f"generation.max_new_tokens({cfg.generation.max_new_tokens}) (the tokens of one turn); "
            "raise max_context_tokens"
        )
    if cfg.val_every > 0 and cfg.data.val_path:
        raise ConfigError(
            "pipeline=agentic validates on held-out env seeds, not data.val_path; set data.val_path=null"
        )


def _check_sft(cfg: JobConfig) -> None:
    for role in ("reference", "critic"):
        if getattr(cfg, role) is not None:
            raise ConfigError(
                f"pipeline=sft trains actor_train only but {role} is set; remove the {role}: section"
            )
    _check_trainable("actor_train", cfg.actor_train, "train_batch_size", cfg.train_batch_size)


def _check_trainable(role: str, worker: WorkerConfig, batch_field: str, batch_size: int) -> None:
    if worker.optimizer is None:
        raise ConfigError(
            f"{role}.optimizer is null but {role} is trained; set e.g. {role}.optimizer.lr=1e-6"
        )
    per_step = worker.data_parallel * worker.micro_batch_size
    if batch_size % per_step:
        raise ConfigError(
            f"{role}: {batch_field}({batch_size}) is not a multiple of data_parallel({worker.data_parallel}) "
            f"x micro_batch_size({worker.micro_batch_size}) = {per_step}; change {batch_field} or "
            f"{role}.micro_batch_size so that {per_step} divides it"
        )
