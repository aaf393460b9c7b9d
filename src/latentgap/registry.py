"""A name → object registry with helpful errors, shared by datasets, networks and models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from latentgap.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; ``get`` raises :class:`ConfigError` listing the valid names."""

    def __init__(self, kind: str, check: Callable[[object, str], T] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._check = check  # validates an object named by a factory path

    def set_check(self, check: Callable[[object, str], T]) -> None:
        """How an object named by ``package.module:attribute`` is validated (and adapted)."""
        self._check = check

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; a name ``package.module:attribute`` imports the
        module and returns the attribute (see :mod:`latentgap.plugins`)."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            pass
        from latentgap.plugins import is_factory_path, resolve

        if is_factory_path(name):
            obj = resolve(name, self.kind)
            return self._check(obj, name) if self._check is not None else obj  # type: ignore[return-value]
        valid = ", ".join(sorted(self._items))
        raise ConfigError(
            f"unknown {self.kind} {name!r}; choose one of: {valid} "
            "(or name your own as package.module:attribute)"
        )

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(k, self._items[k]) for k in self.names()]
