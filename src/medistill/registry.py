"""A tiny name -> factory registry (timm style), used for models, methods and recipes.

Each name remembers where it was registered from: :func:`registering_from` (used by
:mod:`medistill.plugins` while it imports a user's module) labels every name registered inside
it with that module's ``imports:`` entry, so a model file can record which user module it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from medistill.errors import RecipeError

T = TypeVar("T")

#: the ``imports:`` entries being imported now (innermost last)
_SOURCES: list[str] = []


@contextmanager
def registering_from(source: str) -> Iterator[None]:
    """Label every name registered inside the block with ``source``."""
    _SOURCES.append(source)
    try:
        yield
    finally:
        _SOURCES.pop()


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._origins: dict[str, str] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            if _SOURCES:
                self._origins[name] = _SOURCES[-1]
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            raise RecipeError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def origin(self, name: str) -> str | None:
        """The ``imports:`` entry that registered ``name`` (None: medistill or an entry point)."""
        return self._origins.get(name)

    def create(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._factories
