"""Per-call time limits of WorkerGroup on a real local Ray cluster (127.0.0.1): a hung call fails the
step within its limit, naming role, rank and call; calls under the limit are unaffected."""

import time

import pytest

from roll.config.errors import ConfigError
from roll.config.timeouts import TimeoutConfig
from roll.distributed.resource_manager import ResourceManager, RolePlacement
from roll.distributed.worker_group import WorkerFailedError, WorkerGroup, call_timeout_s
from workers.base import Worker

ray = pytest.importorskip("ray")

LIMIT_S = 2.0


class NappingWorker(Worker):
    """`train` sleeps on the ranks listed in `slow_ranks`; `nap` sleeps on every rank."""

    def train(self, seconds: float, slow_ranks: tuple[int, ...] = ()) -> int:
        if self.rank in slow_ranks:
            time.sleep(seconds)
        return self.rank

    def nap(self, seconds: float) -> int:
        time.sleep(seconds)
        return self.rank


def test_hung_call_fails_within_its_limit_naming_role_rank_and_call(ray_cluster):
    resources = ResourceManager([RolePlacement("actor_train", [0, 1])], use_gpu=False, cpus_per_device=0.5)
    timeouts = TimeoutConfig(train_s=LIMIT_S)
    group = WorkerGroup("actor_train", NappingWorker, None, resources, [0, 1], timeouts=timeouts)
    try:
        group.wait_ready()
        assert group.call("train", 0.1, slow_ranks=(0, 1)) == [0, 1]  # under the limit: unaffected

        start = time.monotonic()
        with pytest.raises(WorkerFailedError) as failure:
            group.call("train", 60.0, slow_ranks=(1,))
        assert LIMIT_S <= time.monotonic() - start < LIMIT_S + 3.0
        message = str(failure.value)
        assert message.startswith("actor_train rank 1: call 'train' did not finish within 2 s;"), message
        assert message.endswith("raise timeouts.train_s"), message

        # Rank 1 is still asleep (not killed); an explicit limit names every unfinished rank.
        refs = group.call_async("nap", 0.0)
        with pytest.raises(WorkerFailedError) as failure:
            group.wait(refs, timeout_s=0.5, call="nap")
        assert str(failure.value).startswith("actor_train rank 1: call 'nap' did not finish within 0.5 s;")
        assert group.wait(refs[:1], timeout_s=LIMIT_S, call="nap") == [0]  # rank 0 is fine

        refs = group.call_async("nap", 60.0)
        with pytest.raises(
            WorkerFailedError, match=r"^actor_train rank 0: .* \(nor had ranks \[1\]\).* timeout_s$"
        ):
            group.wait(refs, timeout_s=0.5, call="nap")
    finally:
        group.kill()
        resources.shutdown()


def test_limits_follow_the_method_table():
    timeouts = TimeoutConfig(init_s=10, generate_s=11, log_probs_s=12, sync_s=13, default_s=14)
    methods = ("parallel_info", "run_episodes", "compute_values", "sync_weights", "score", None)
    assert [call_timeout_s(timeouts, m) for m in methods] == [10, 11, 12, 13, 14, 14]


@pytest.mark.parametrize("value", [0, -5.0, "600"])
def test_timeouts_must_be_positive_seconds(value):
    with pytest.raises(ConfigError, match=rf"timeouts\.train_s={value!r} must be a number of seconds > 0"):
        TimeoutConfig(train_s=value)
