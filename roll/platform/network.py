"""Where a worker's listening sockets bind: the rendezvous TCPStore and the gloo/NCCL transports.

torch's defaults listen too widely for a local run: the env:// TCPStore server binds every
interface (`*:PORT`) and gloo binds whatever the hostname resolves to. These helpers bind them to
one address instead. Which address is decided once, in `roll.distributed.ray_runtime.
node_listen_address` (127.0.0.1 for local runs); this module only carries the decision out.
"""

import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Optional

import torch.distributed as dist

from roll.utils.logging import get_logger

logger = get_logger(__name__)

LOOPBACK = "127.0.0.1"
_SIOCGIFADDR = 0x8915  # Linux ioctl: the primary IPv4 address of an interface


def is_ip_literal(host: str) -> bool:
    """Whether `host` is an IPv4/IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP literal or "localhost") is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def interface_ipv4(name: str) -> Optional[str]:
    """The primary IPv4 address of interface `name`, or None (unknown interface, not Linux)."""
    if not sys.platform.startswith("linux") or not name or len(name) > 15:
        return None
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interface_of(address: str) -> Optional[str]:
    """The name of the interface whose primary IPv4 address is `address`, or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((name for name in names if interface_ipv4(name) == address), None)


def socket_interface_env(address: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME values that make the transports listen on `address`.

    Loopback: both name the loopback interface, overriding inherited values (a local run listens
    nowhere else). Otherwise values already in `environ` are the operator's choice and are kept;
    GLOO_SOCKET_IFNAME defaults to the interface holding `address`. NCCL keeps its own default
    there: it prefers InfiniBand and fast NICs, which may not be the Ray node IP's interface.
    """
    if is_loopback(address):
        lo = interface_of(LOOPBACK) or "lo"
        return {"GLOO_SOCKET_IFNAME": lo, "NCCL_SOCKET_IFNAME": lo}
    if environ.get("GLOO_SOCKET_IFNAME"):
        return {}
    iface = interface_of(address)
    if iface is None:
        logger.warning(
            "no interface holds %s; gloo listens where the hostname resolves (set GLOO_SOCKET_IFNAME)",
            address,
        )
        return {}
    return {"GLOO_SOCKET_IFNAME": iface}


def env_interface_address(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The IPv4 address of the interface named by GLOO_SOCKET_IFNAME, else NCCL_SOCKET_IFNAME (first
    name of a list; NCCL's prefix/exclusion syntax is not an interface name and is skipped)."""
    for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        name = environ.get(var, "").split(",")[0].strip()
        address = interface_ipv4(name) if name and name[0] not in "^=" else None
        if address:
            return address
    return None


def bound_tcp_store(host: str, port: int, world_size: int, timeout: timedelta) -> dist.TCPStore:
    """The server side of a TCPStore listening on `host:port` only (torch's own binds every interface).

    `host` must be an IP literal or "localhost" of this machine. The socket is bound here and handed
    to torch as `master_listen_fd`; clients connect with a plain `TCPStore(host, port)`.
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(socket.SOMAXCONN)
    except OSError as err:
        sock.close()
        raise RuntimeError(
            f"TCPStore: cannot listen on {host}:{port} ({err}); MASTER_ADDR must be an address of the "
            f"rank-0 machine and MASTER_PORT a free port there"
        ) from err
    return dist.TCPStore(
        host, port, world_size, is_master=True, timeout=timeout, master_listen_fd=sock.detach()
    )
