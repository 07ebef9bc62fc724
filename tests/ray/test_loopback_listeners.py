"""Local runs listen on loopback only: a 2-rank gloo group inside Ray workers, set up as the Megatron
roles do (`set_rank_env` + `roll.platform.init_distributed`), opens no socket on 0.0.0.0 or ::.

The listening sockets of each worker process are read from /proc (Linux only): the socket inodes in
/proc/<pid>/fd joined with the LISTEN rows of /proc/<pid>/net/tcp and tcp6. Nothing here needs a
non-loopback interface. The address-choice rules for clusters are checked as pure functions.
"""

import ipaddress
import os
import socket
import sys
from datetime import timedelta

import pytest
import torch

from roll.distributed.ray_runtime import node_listen_address
from roll.distributed.resource_manager import ResourceManager, RolePlacement
from roll.distributed.worker_group import WorkerGroup
from roll.platform.network import bound_tcp_store, env_interface_address, socket_interface_env
from workers.base import Worker

ray = pytest.importorskip("ray")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and Linux ioctls")

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


class GlooRole(Worker):
    """Rank env + init_distributed, plus a second gloo group as Megatron's parallel_state makes."""

    def __init__(self, config, **rank_info):
        super().__init__(config, **rank_info)
        import torch.distributed as dist

        from roll.platform import init_distributed

        init_distributed()
        self.subgroup = dist.new_group(list(range(self.world_size)))

    def info(self) -> dict:
        import torch.distributed as dist

        value = torch.tensor([1.0])
        dist.all_reduce(value, group=self.subgroup)
        return {
            "pid": os.getpid(),
            "sum": float(value),
            "master_port": int(os.environ["MASTER_PORT"]),
            "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
        }


def _decode_address(hex_address: str) -> str:
    """/proc/net/tcp{,6} local address (32-bit words in host byte order) -> text, IPv4-mapped unwrapped."""
    raw = b"".join(bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, len(hex_address), 8))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    address = ipaddress.IPv6Address(raw)
    return str(address.ipv4_mapped or address)


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` holds in LISTEN state."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == _LISTEN and inode in inodes:
                    address, port = local.rsplit(":", 1)
                    found.append((_decode_address(address), int(port, 16)))
    return sorted(found)


@linux_only
def test_gloo_group_in_local_ray_listens_on_loopback_only(ray_cluster):
    resources = ResourceManager([RolePlacement("test", [0, 1])], use_gpu=False, cpus_per_device=0.5)
    group = WorkerGroup("test", GlooRole, None, resources, [0, 1])
    try:
        infos = group.call("info")
        assert [info["sum"] for info in infos] == [2.0, 2.0]  # both groups formed
        assert {info["gloo_ifname"] for info in infos} == {"lo"}
        listeners = {rank: listening_sockets(info["pid"]) for rank, info in enumerate(infos)}
        wide = {rank: [s for s in socks if s[0] != "127.0.0.1"] for rank, socks in listeners.items()}
        assert wide == {0: [], 1: []}, f"listeners off loopback: {listeners}"
        # Not vacuous: rank 0 hosts the rendezvous store, and every rank has gloo transport listeners.
        assert ("127.0.0.1", infos[0]["master_port"]) in listeners[0]
        for rank in (0, 1):
            others = [s for s in listeners[rank] if s[1] != infos[0]["master_port"]]
            assert others, f"rank {rank}: no gloo listener found in {listeners[rank]}"
    finally:
        group.kill()
        resources.shutdown()


# ---------------------------------------------------------------------- address choice (no Ray)
@linux_only
def test_loopback_address_pins_both_transports_to_lo():
    inherited = {"GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "eth0"}
    env = socket_interface_env("127.0.0.1", inherited)
    assert env == {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}


@linux_only
def test_cluster_address_keeps_operator_interfaces():
    assert socket_interface_env("198.51.100.7", {"GLOO_SOCKET_IFNAME": "ib0"}) == {}
    # No interface holds this TEST-NET address: gloo keeps its default instead of a wrong interface.
    assert socket_interface_env("198.51.100.7", {}) == {}
    assert env_interface_address({"GLOO_SOCKET_IFNAME": "lo,ib0"}) == "127.0.0.1"
    assert env_interface_address({"NCCL_SOCKET_IFNAME": "lo"}) == "127.0.0.1"
    assert env_interface_address({"NCCL_SOCKET_IFNAME": "^docker,veth"}) is None


@linux_only
def test_node_listen_address_precedence(monkeypatch):
    import ray.util

    for name in ("ROLL_NODE_IP", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    monkeypatch.setenv("ROLL_NODE_IP", "198.51.100.7")
    assert node_listen_address() == "127.0.0.1"  # local runtime: loopback whatever the env says
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "198.51.100.9")
    assert node_listen_address() == "198.51.100.7"
    monkeypatch.delenv("ROLL_NODE_IP")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    assert node_listen_address() == "127.0.0.1"
    monkeypatch.delenv("GLOO_SOCKET_IFNAME")
    assert node_listen_address() == "198.51.100.9"


def test_store_refuses_an_address_this_machine_lacks():
    with pytest.raises(RuntimeError, match=r"cannot listen on 198\.51\.100\.7:\d+"):
        bound_tcp_store("198.51.100.7", 29500, 1, timedelta(seconds=1))
