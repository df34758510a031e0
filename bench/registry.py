"""One small registry shape for backbones, datasets, modes, weights and optimizers."""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from .errors import unknown

T = TypeVar("T")


class UnknownName(LookupError):
    """A name missing from a registry; the message lists the valid ones."""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownName(unknown(self.kind, name, self._items)) from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:  # an unhashable value from YAML (a list, a mapping) is no name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
