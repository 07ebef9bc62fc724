"""The cluster a job runs on: nodes, GPUs per node, GPU memory.

Device ids in `device_mapping` count GPUs across the job's nodes: id d is GPU d % gpus_per_node of
node d // gpus_per_node. With this section, configs that cannot be placed fail at `--validate`
(a device id beyond the cluster, a tensor-parallel group of a rollout replica spread over two nodes)
instead of after GPUs are allocated. Without it (null) those checks are skipped.
"""

from dataclasses import dataclass

from roll.config.errors import ConfigError


@dataclass(kw_only=True)
class ClusterConfig:
    """Shape of the GPU cluster the device ids refer to."""

    num_nodes: int = 1
    """Nodes of the job."""
    gpus_per_node: int = 8
    """GPUs per node; device id d lives on node d // gpus_per_node."""
    gpu_memory_gb: float = 80.0
    """Memory of one GPU in GB (used by memory planning)."""

    def __post_init__(self) -> None:
        for name in ("num_nodes", "gpus_per_node"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cluster.{name}={getattr(self, name)} must be >= 1")
        if self.gpu_memory_gb <= 0:
            raise ConfigError(f"cluster.gpu_memory_gb={self.gpu_memory_gb} must be > 0")

    @property
    def num_gpus(self) -> int:
        """GPUs across all nodes."""
        return self.num_nodes * self.gpus_per_node

    def node_of(self, device: int) -> int:
        """Node index of a device id."""
        return device // self.gpus_per_node


def replica_groups(devices: list[int], tensor_parallel: int) -> list[list[int]]:
    """A rollout role's devices cut into replicas of `tensor_parallel` consecutive ids (rank order)."""
    if len(devices) % tensor_parallel:
        raise ValueError(
            f"{len(devices)} devices do not split into replicas of tensor_parallel={tensor_parallel}"
        )
    return [devices[i : i + tensor_parallel] for i in range(0, len(devices), tensor_parallel)]
