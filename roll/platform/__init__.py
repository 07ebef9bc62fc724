"""Device abstraction (cuda | cpu), the CPU layer that lets Megatron run on gloo, and where the
process-group listeners bind."""

from roll.platform.cpu_megatron import apply_cpu_megatron_patches, cpu_megatron_patches_applied
from roll.platform.device import current_device, get_device_type, init_distributed
from roll.platform.network import bound_tcp_store, is_loopback, socket_interface_env

__all__ = [
    "apply_cpu_megatron_patches",
    "bound_tcp_store",
    "cpu_megatron_patches_applied",
    "current_device",
    "get_device_type",
    "init_distributed",
    "is_loopback",
    "socket_interface_env",
]
