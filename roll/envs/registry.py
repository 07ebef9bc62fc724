"""Registries of environments and tools: by name, or by import path from the user's own code.

    @register_env("frozen_lake")
    class FrozenLake: ...

In YAML an environment (or a tool) is `{type: <registered name> | "my_pkg.my_envs:MyEnv", args: {...}}`.
`resolve` turns the type into the class; `check_args` validates the args against the class's
constructor before any worker starts, so a typo is one line naming the env, the arg and the
accepted ones instead of a TypeError deep inside a Ray actor.
"""

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")


class Registry(Generic[_T]):
    """Named classes of one kind ("env", "tool"), also reachable by `module.path:Name`."""

    def __init__(self, kind: str, fix_hint: str) -> None:
        self.kind = kind
        self.fix_hint = fix_hint
        self._classes: dict[str, type[_T]] = {}

    def register(self, name: str) -> Callable[[type[_T]], type[_T]]:
        """Class decorator registering under `name`; registering another class under it is an error."""

        def decorator(cls: type[_T]) -> type[_T]:
            existing = self._classes.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered ({existing!r}); pick another name"
                )
            self._classes[name] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted (bundled ones register on import of their package)."""
        _import_bundled()
        return sorted(self._classes)

    def resolve(self, type_name: str) -> type[_T]:
        """The class named by a registry name or a `module.path:Name` import path."""
        if not isinstance(type_name, str) or not type_name:
            raise ValueError(
                f"{self.kind} type={type_name!r} must be a registered name or 'module.path:Class'"
            )
        if ":" in type_name:
            return self._import(type_name)
        _import_bundled()
        if type_name not in self._classes:
            close = difflib.get_close_matches(type_name, self._classes, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{self.kind} type={type_name!r} is not registered{hint} Registered: "
                f"{', '.join(self.names())}; or give an import path 'my_pkg.module:Class' ({self.fix_hint})"
            )
        return self._classes[type_name]

    def _import(self, path: str) -> type[_T]:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(
                f"{self.kind} type={path!r}: cannot import module {module_name!r} ({err}); "
                "make it importable (installed, or on PYTHONPATH for every Ray worker)"
            ) from None
        cls = getattr(module, attr, None)
        if cls is None:
            public = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, public, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{self.kind} type={path!r}: module {module_name!r} has no attribute {attr!r}{hint}"
            )
        if not callable(cls):
            raise ValueError(f"{self.kind} type={path!r} is a {type(cls).__name__}, not a class")
        return cls

    def check_args(self, type_name: str, args: Mapping[str, Any]) -> type[_T]:
        """Resolve `type_name` and check `args` bind to its constructor; returns the class."""
        cls = self.resolve(type_name)
        if not isinstance(args, Mapping):
            raise ValueError(
                f"{self.kind} {type_name!r}: args must be a mapping of keyword arguments, got {args!r}"
            )
        signature = inspect.signature(cls)
        params = signature.parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in args:
            if key not in params and not takes_kwargs:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"{self.kind} {type_name!r}: unknown arg {key!r}{hint} Accepted: "
                    f"{', '.join(accepted) or '(none)'}"
                )
        try:
            signature.bind(**args)
        except TypeError as err:
            raise ValueError(
                f"{self.kind} {type_name!r}: args {dict(args)} do not fit {cls.__name__}{signature}: {err}"
            ) from None
        return cls

    def build(self, type_name: str, args: Mapping[str, Any]) -> _T:
        """An instance of the class named `type_name`, constructed with `args`."""
        return self.check_args(type_name, args)(**args)


def _import_bundled() -> None:
    # The bundled envs and tools register themselves when their modules are imported.
    importlib.import_module("roll.envs.bundled")


ENVS: Registry[Any] = Registry("env", "see README 'Define an environment'")
TOOLS: Registry[Any] = Registry("tool", "see docs/agentic.md 'Tools'")


def register_env(name: str) -> Callable[[type], type]:
    """Class decorator: make an environment available as `type: name` in YAML."""
    return ENVS.register(name)


def register_tool(name: str) -> Callable[[type], type]:
    """Class decorator: make a tool available as `type: name` in YAML."""
    return TOOLS.register(name)
