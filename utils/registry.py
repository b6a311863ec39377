"""One registry helper for every "name -> factory" table: backbones, heads, datasets, methods.

    DATASETS = Registry("dataset", error=DatasetError)

    @DATASETS.register("raf-db")          # a decorator ...
    def raf_db_samples(root, split, ...): ...

    DATASETS.add("folder", folder_samples)  # ... or one line

    DATASETS.lookup("nope")  # DatasetError: --dataset 'nope' is unknown; choose from demo, folder, raf-db

A :class:`Registry` is a ``dict`` (``name in R``, ``R[name]``, ``sorted(R)`` work as before), with
one registration rule (a name is registered once) and one "unknown" message that names the flag
and lists every known name.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """``kind`` names the thing (``"method"``); ``flag`` the command-line flag that picks it
    (default ``--kind``); ``error`` the exception type of an unknown name."""

    def __init__(self, kind: str, flag: str | None = None, error: type[Exception] = ValueError) -> None:
        super().__init__()
        self.kind = kind
        self.flag = flag or f"--{kind}"
        self.error = error

    def add(self, name: str, factory: T, replace: bool = False) -> T:
        """Register ``factory`` under ``name``; a second registration of a name is refused."""
        if name in self and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = factory
        return factory

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda factory: self.add(name, factory)

    def unknown_message(self, name: str) -> str:
        return f"{self.flag} {name!r} is unknown; choose from {', '.join(sorted(self))}"

    def lookup(self, name: str) -> T:
        """The factory of ``name``, or ``error`` naming the flag and every known name."""
        if name not in self:
            raise self.error(self.unknown_message(name))
        return self[name]

    def names(self) -> list[str]:
        return sorted(self)
