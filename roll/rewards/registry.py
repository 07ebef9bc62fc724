"""Registry of rule reward functions: `@register_reward("name")` and `get_reward_fn("name")`.

A rule reward is `fn(response: str, answer: str, **kwargs) -> float`, a pure function of the text
(it must be picklable by reference, i.e. defined at module top level, because batches are scored
in a worker process). The bundled functions register on import of `roll.rewards`.
"""

import difflib
from collections.abc import Callable
from typing import Protocol, TypeVar, cast


class RewardFn(Protocol):
    """A rule reward: the policy's response text and the reference answer in, a float score out."""

    def __call__(self, response: str, answer: str, **kwargs) -> float: ...


_REGISTRY: dict[str, RewardFn] = {}
# A concrete reward names its own keyword options (`pattern=...`) instead of taking **kwargs, which
# the RewardFn protocol cannot express; the decorator keeps the function's own signature.
_F = TypeVar("_F", bound=Callable[..., float])


def register_reward(name: str) -> Callable[[_F], _F]:
    """Decorator registering `fn` under `name`; a second registration of the same name is an error."""

    def decorator(fn: _F) -> _F:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(
                f"reward function {name!r} is already registered ({_REGISTRY[name]!r}); pick another name"
            )
        _REGISTRY[name] = cast(RewardFn, fn)
        return fn

    return decorator


def registered_rewards() -> list[str]:
    """Names of all registered reward functions, sorted."""
    return sorted(_REGISTRY)


def get_reward_fn(name: str) -> RewardFn:
    """The reward function registered as `name`; an unknown name lists the registered ones."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"reward function {name!r} is not registered.{hint} Registered: {', '.join(registered_rewards())}"
        )
    return _REGISTRY[name]
