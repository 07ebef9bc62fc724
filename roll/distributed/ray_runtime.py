"""Start (or join) Ray for a job, bound to loopback when local, and stop only what we started.

Local runs start Ray on 127.0.0.1 with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` so nothing listens on
other interfaces; with an address (`ray_address` / `RAY_ADDRESS`) the job joins that cluster.
`node_listen_address()` is the one place that decides where our own listeners (the role groups'
rendezvous stores, gloo/NCCL transports) bind: loopback when Ray itself runs on loopback.
"""

import os
import socket
from typing import Optional

from roll.platform.network import LOOPBACK, env_interface_address, is_loopback
from roll.utils.logging import get_logger

logger = get_logger(__name__)


class RayRuntime:
    """Context manager owning the Ray connection of one driver process."""

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.started_local = False

    def __enter__(self) -> "RayRuntime":
        if not self.address:
            # Ray reads this once, at import: set it before the first `import ray`.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        if ray.is_initialized():
            return self
        if self.address:
            logger.info("joining Ray cluster at %s", self.address)
            ray.init(address=self.address, log_to_driver=True)
            return self
        _loopback_only_if_imported_early()
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


def _loopback_only_if_imported_early() -> None:
    """Honour RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 when `ray` was imported before it was set.

    Otherwise the driver takes the machine's IP as its node IP and the Ray workers' own servers
    listen on every interface. Ray 2.60 reads the flag as `ray_constants.ENABLE_RAY_CLUSTER` at call time.
    """
    from ray._private import ray_constants

    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0" and ray_constants.ENABLE_RAY_CLUSTER:
        ray_constants.ENABLE_RAY_CLUSTER = False


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on `host` a moment ago (for torch.distributed rendezvous)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_local_runtime() -> bool:
    """Whether the connected Ray runtime lives on loopback, i.e. is a single-machine local run.

    Ray reports 127.0.0.1 as the node IP only when it was started there (as `RayRuntime` does for
    local runs), and such a runtime cannot span machines.
    """
    import ray

    return is_loopback(ray.util.get_node_ip_address())


def node_listen_address() -> str:
    """The address this process's node listens on for process groups (store, gloo/NCCL transports).

    Local runtime: 127.0.0.1. Cluster: ROLL_NODE_IP if set, else the address of the interface named
    by GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME, else the node IP Ray reports.
    """
    import ray

    if is_local_runtime():
        return LOOPBACK
    return os.environ.get("ROLL_NODE_IP") or env_interface_address() or ray.util.get_node_ip_address()
