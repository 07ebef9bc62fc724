"""Generalized advantage estimation (GAE) as a reverse scan over (B, T), parallel over the batch.

`gae` runs the C++ scan in `roll._C` (csrc/gae.cpp) for CPU tensors and the CUDA kernel in
`roll._C_cuda` (csrc/cuda/gae.cu) for GPU tensors; without them it falls back to `gae_reference`,
the reverse loop in torch (vectorised over the batch). The semantics are those of
`roll.algorithms.advantages.compute_gae_advantage_return`: masked tokens (mask = 0, e.g. env
tokens between turns) carry the recursion (the running advantage and the next value pass through
unchanged), so each row gets the GAE over its unmasked tokens; the bootstrap value past the last
token is 0; outputs are multiplied by the mask, so advantages and returns = advantages + values
are 0 outside it.
"""

import torch

from roll.ops._extension import cpu_extension, cuda_extension, log_fallback


def gae_reference(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reverse loop over T in torch; (B, T) float32 in, (advantages, returns) out."""
    # Time-major copies make every per-step slice contiguous (about 2x faster than column slices).
    active, rewards_t, values_t = (x.t().contiguous() for x in (mask > 0, rewards, values))
    next_value = values.new_zeros(values.shape[0])
    running = values.new_zeros(values.shape[0])
    advantages_t = torch.zeros_like(values_t)
    for t in reversed(range(values_t.shape[0])):
        delta = rewards_t[t] + gamma * next_value - values_t[t]
        running = torch.where(active[t], delta + gamma * lam * running, running)
        next_value = torch.where(active[t], values_t[t], next_value)
        advantages_t[t] = running
    advantages = advantages_t.t()
    return advantages * mask, (advantages + values) * mask


def _check(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"gae: rewards must be (B, T), got shape {tuple(rewards.shape)}")
    for name, tensor in (("values", values), ("mask", mask)):
        if tensor.shape != rewards.shape:
            raise ValueError(
                f"gae: {name} shape {tuple(tensor.shape)} != rewards shape {tuple(rewards.shape)}; "
                "pass (B, T) tensors aligned token by token"
            )
        if tensor.device != rewards.device:
            raise ValueError(
                f"gae: {name} is on {tensor.device} but rewards on {rewards.device}; move them together"
            )
    for name, value in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"gae: {name} must be in [0, 1], got {value}")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), each (B, T) float32 on the inputs' device; inputs are cast to float32."""
    _check(rewards, values, mask, gamma, lam)
    rewards, values, mask = (x.detach().to(torch.float32).contiguous() for x in (rewards, values, mask))
    if rewards.is_cuda:
        extension = cuda_extension()
        if extension is not None:
            return tuple(extension.gae(rewards, values, mask, float(gamma), float(lam)))
        log_fallback("gae", "roll._C_cuda")
        return gae_reference(rewards, values, mask, gamma, lam)
    extension = cpu_extension()
    if extension is not None and rewards.device.type == "cpu":
        advantages, returns = extension.gae(rewards.numpy(), values.numpy(), mask.numpy(), gamma, lam)
        return torch.from_numpy(advantages), torch.from_numpy(returns)
    log_fallback("gae", "roll._C")
    return gae_reference(rewards, values, mask, gamma, lam)
