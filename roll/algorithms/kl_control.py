"""KL coefficient controllers: fixed, and adaptive (Ziegler et al. 2019) towards a target KL."""

from typing import Protocol, Union

from roll.config.algorithm import AlgorithmConfig

# Ziegler et al. bound the proportional error so one noisy batch moves the coefficient by at most 20%.
_MAX_PROPORTIONAL_ERROR = 0.2


class KLController(Protocol):
    """Holds the current KL coefficient (`value`) and updates it from the measured KL."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""


class AdaptiveKLController:
    """coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon after each batch."""

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int) -> None:
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(
                f"adaptive KL needs kl_target > 0 and kl_horizon > 0, got {target_kl} and {horizon}"
            )
        self.value = init_kl_coef
        self.target_kl = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move the coefficient towards the target; n_steps is the number of samples in the batch."""
        error = min(max(current_kl / self.target_kl - 1, -_MAX_PROPORTIONAL_ERROR), _MAX_PROPORTIONAL_ERROR)
        self.value *= 1 + error * n_steps / self.horizon


def make_kl_controller(cfg: AlgorithmConfig) -> Union[FixedKLController, AdaptiveKLController]:
    """The controller the algorithm config asks for, starting at cfg.kl_coef."""
    if cfg.adaptive_kl:
        return AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)
