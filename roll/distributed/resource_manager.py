"""Turn each role's `device_mapping` into placement-group bundles and per-actor resource requests.

One placement group holds one bundle per device id used by any role: `{"GPU": 1, "CPU": c}` on GPU
clusters, `{"CPU": c}` slots on CPU machines, so the same config shape runs on a laptop and on a
cluster. Roles listing the same device are colocated: each of their actors asks for an equal share
of that bundle (Ray needs fractions that sum to at most 1).
"""

from collections import Counter
from dataclasses import dataclass
from typing import Any

from roll.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass(frozen=True)
class RolePlacement:
    """Devices of one role, in rank order."""

    role: str
    devices: list[int]


class ResourceManager:
    """Owns the job's placement group and hands out per-rank scheduling options."""

    def __init__(
        self,
        placements: list[RolePlacement],
        *,
        use_gpu: bool,
        cpus_per_device: float = 1.0,
        ready_timeout_s: float = 120.0,
    ) -> None:
        import ray
        from ray.util.placement_group import placement_group

        self.use_gpu = use_gpu
        self.cpus_per_device = cpus_per_device
        self.num_devices = max(d for p in placements for d in p.devices) + 1
        self._sharing = Counter(d for p in placements for d in p.devices)
        unused = sorted(set(range(self.num_devices)) - set(self._sharing))
        if unused:
            logger.info("devices %s are not used by any role; their bundles stay idle", unused)
        bundle = {"GPU": 1.0, "CPU": cpus_per_device} if use_gpu else {"CPU": cpus_per_device}
        self.placement_group = placement_group(
            [dict(bundle) for _ in range(self.num_devices)], strategy="PACK"
        )
        ready, _ = ray.wait([self.placement_group.ready()], timeout=ready_timeout_s)
        if not ready:
            available = ray.available_resources()
            kind = "GPU" if use_gpu else "CPU"
            raise RuntimeError(
                f"placement group of {self.num_devices} x {bundle} not satisfied within {ready_timeout_s:.0f}s: "
                f"the cluster has {available.get(kind, 0):g} {kind} free; lower device_mapping or add nodes"
            )

    def actor_options(self, device: int) -> dict[str, Any]:
        """Ray `.options(...)` for an actor on `device`, sharing the bundle with colocated roles."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        share = 1.0 / self._sharing[device]
        options: dict[str, Any] = {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.placement_group, placement_group_bundle_index=device
            ),
            "num_cpus": self.cpus_per_device * share,
        }
        if self.use_gpu:
            options["num_gpus"] = share
        return options

    def shutdown(self) -> None:
        """Release the placement group."""
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.placement_group)
