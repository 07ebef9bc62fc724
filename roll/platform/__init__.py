"""Device abstraction (cuda | cpu) and the CPU layer that lets Megatron run on gloo."""

from roll.platform.cpu_megatron import apply_cpu_megatron_patches, cpu_megatron_patches_applied
from roll.platform.device import current_device, get_device_type, init_distributed

__all__ = [
    "apply_cpu_megatron_patches",
    "cpu_megatron_patches_applied",
    "current_device",
    "get_device_type",
    "init_distributed",
]
