"""How long the driver waits for one call on a role's workers before it fails the step.

A hung worker (a stuck collective, a deadlocked engine) would otherwise hang the driver forever.
`WorkerGroup` maps each worker method to one of these limits (see `CALL_TIMEOUTS` in
roll/distributed/worker_group.py); the defaults are generous so that only a real hang trips them.
"""

from dataclasses import dataclass, fields

from roll.config.errors import ConfigError


@dataclass(kw_only=True)
class TimeoutConfig:
    """Per-call time limits (seconds) of the driver's waits on role workers."""

    init_s: float = 3600.0
    """Worker start-up: model load, process-group rendezvous, first parallel_info."""
    generate_s: float = 3600.0
    """One rollout call (generate, agentic run_episodes) on a rollout/environment worker."""
    log_probs_s: float = 1800.0
    """One forward-only pass over a batch: old/reference log-probs, critic values."""
    train_s: float = 3600.0
    """One update call (train, train_sft) over the step's batch."""
    sync_s: float = 1800.0
    """Weight sync actor_train -> actor_infer (sync_weights, finish_weight_update)."""
    checkpoint_s: float = 3600.0
    """Saving a sharded checkpoint or exporting HF weights."""
    default_s: float = 1800.0
    """Any other call (rewards, close, stats ...)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(
                    f"timeouts.{f.name}={value!r} must be a number of seconds > 0; "
                    f"raise it for slow calls (e.g. timeouts.{f.name}=7200)"
                )
