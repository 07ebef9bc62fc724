"""Start (or join) Ray for a job, bound to loopback when local, and stop only what we started.

Local runs start Ray on 127.0.0.1 with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` so nothing listens on
other interfaces; with an address (`ray_address` / `RAY_ADDRESS`) the job joins that cluster.
"""

import os
import socket
from typing import Optional

from roll.utils.logging import get_logger

logger = get_logger(__name__)


class RayRuntime:
    """Context manager owning the Ray connection of one driver process."""

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.started_local = False

    def __enter__(self) -> "RayRuntime":
        import ray

        if ray.is_initialized():
            return self
        if self.address:
            logger.info("joining Ray cluster at %s", self.address)
            ray.init(address=self.address, log_to_driver=True)
            return self
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Workers must import roll/workers from this checkout even when it is not pip-installed.
        repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        pythonpath = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)
        # address="local": never attach to a cluster that `ray start` left on this machine.
        ray.init(
            address="local",
            num_cpus=self.num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}},
        )
        self.started_local = True
        logger.info("started local Ray on 127.0.0.1 (num_cpus=%s)", self.num_cpus)
        return self

    def __exit__(self, *exc) -> None:
        import ray

        if self.started_local and ray.is_initialized():
            ray.shutdown()
            self.started_local = False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (for torch.distributed rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
