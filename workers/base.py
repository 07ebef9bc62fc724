"""The Ray worker base: rank bookkeeping and the torch.distributed environment of a role's group.

Worker classes derive from `Worker` or, for the Megatron roles, from `workers.actor.MegatronRole`
(one level of inheritance, no more); both set the rank environment with `set_rank_env`. A worker is
a thin shell: it owns a strategy/engine/reward computer from `roll/` and forwards calls to it.
"""

import os
from typing import Any

from roll.distributed.ray_runtime import node_listen_address
from roll.platform.network import is_loopback, socket_interface_env


def set_rank_env(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    """Export the torch.distributed env:// variables of this rank within its role's group, and the
    gloo/NCCL interface that its transports listen on.

    A loopback `master_addr` means a local run (`node_listen_address` chose it): every listener
    stays on loopback. On a cluster each rank listens on its own node's chosen address.
    """
    listen_address = master_addr if is_loopback(master_addr) else node_listen_address()
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK="0",
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
        **socket_interface_env(listen_address),
    )


class Worker:
    """Rank, world size and rendezvous address of one Ray actor within its role's group."""

    def __init__(
        self, config: Any, *, rank: int, world_size: int, master_addr: str, master_port: int
    ) -> None:
        self.config = config
        self.rank = rank
        self.world_size = world_size
        set_rank_env(rank, world_size, master_addr, master_port)

    def parallel_info(self) -> dict[str, Any]:
        """Data-parallel rank/size and whether this rank returns results (overridden by Megatron roles)."""
        return {"dp_rank": self.rank, "dp_size": self.world_size, "is_output": True}

    def ping(self) -> int:
        """Liveness check: returns the rank."""
        return self.rank
