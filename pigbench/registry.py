"""Typed, lazy, thread-safe registries of evaluators and dataset adapters.

Built-ins are registered as lazy ``"module:attr"`` placeholders (see
``pigbench/evaluators/__init__.py`` and ``pigbench/adapters/__init__.py``); third-party packages
declare entry points in the groups ``pigbench.evaluators`` and ``pigbench.adapters``::

    [project.entry-points."pigbench.evaluators"]
    my-reward = "my_pkg.evaluator:MyReward"

Usage::

    from pigbench.registry import evaluators
    cls = evaluators.get("ssim-reference")      # imports only that plug-in's module
    evaluators.names()                          # imports no plug-in module
    evaluators.get("ssim-refrence")             # KeyError: ... did you mean 'ssim-reference'?

Plug-in modules keep heavy imports (torch, transformers) inside functions, so that loading a
class to read its metadata stays cheap.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar, Union

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown name, clashing names, or a plug-in of the wrong type. ``str()`` is the message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class _Entry:
    target: Union[str, type]  # "module:attr" until loaded
    source: str  # "built-in" or "entry point <dist>: <value>"


class Registry(Generic[T]):
    """Maps names to subclasses of ``base``; placeholders are imported on first ``get``."""

    def __init__(self, kind: str, base_path: str, group: str, catalogue: str) -> None:
        self.kind = kind
        self._base_path = base_path  # "module:Class", resolved lazily to avoid import cycles
        self.group = group
        self._catalogue = catalogue  # module whose import registers the built-ins lazily
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._loaded = False

    # registration -------------------------------------------------------------------------
    def register_lazy(self, name: str, target: str, source: str = "built-in") -> None:
        """Register ``"module:attr"`` under ``name`` without importing it."""
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:attr', got {target!r}")
        self._add(name, _Entry(target, source))

    def register(self, name: str):
        """Class decorator registering ``cls`` under ``name`` (for code that defines plug-ins inline).
        A class of the same module and qualified name registered again under ``name`` replaces the
        first: a notebook cell run again, or a module reloaded, defines the class anew."""

        def deco(cls: type[T]) -> type[T]:
            self._check_type(name, cls)
            self._add(name, _Entry(cls, f"module {cls.__module__}"))
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def _add(self, name: str, entry: _Entry) -> None:
        with self._lock:
            old = self._entries.get(name)
            if old is not None and old.target != entry.target and not _redefined(old.target, entry.target):
                raise RegistryError(
                    f"{self.kind} name {name!r} is registered twice: by {old.source} "
                    f"({_describe(old.target)}) and by {entry.source} ({_describe(entry.target)}); rename one"
                )
            self._entries[name] = entry

    # lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """All registered names, sorted; imports no plug-in module."""
        self._load_entry_points()
        with self._lock:
            return sorted(self._entries)

    def source(self, name: str) -> str:
        self._load_entry_points()
        return self._entry(name).source

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, imported on first use."""
        self._load_entry_points()
        with self._lock:
            entry = self._entry(name)
            if isinstance(entry.target, str):
                module_name, colon, attr = entry.target.partition(":")
                if not colon:
                    raise RegistryError(f"{self.kind} {name!r} ({entry.target}, from {entry.source}) cannot be loaded: "
                                        "its entry point must name the class, as 'module:Class'")
                try:
                    obj = getattr(importlib.import_module(module_name), attr)
                except Exception as exc:  # importing a plug-in runs its code: anything can fail there
                    detail = f" at {exc.filename}:{exc.lineno}: {exc.msg}" if isinstance(exc, SyntaxError) else f": {exc}"
                    raise RegistryError(f"{self.kind} {name!r} ({entry.target}, from {entry.source}) cannot be loaded: "
                                        f"{type(exc).__name__}{detail}") from None
                self._check_type(name, obj)
                if not obj.name:  # a class registered under several names keeps its first
                    obj.name = name
                entry.target = obj
            return entry.target  # type: ignore[return-value]

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            # a plug-in that declared it under a misspelled (or the other) pigbench entry-point group
            stray = next((ep for ep in entry_points(name=name)
                          if ep.group != self.group and ep.group.lower().startswith("pigbench")), None)
            if stray is not None:
                dist = getattr(getattr(stray, "dist", None), "name", "?")
                hint = (f"; package {dist!r} declares it in the entry-point group {stray.group!r}, "
                        f"not {self.group!r}: fix its pyproject.toml and reinstall it")
            known = ", ".join(sorted(self._entries))
            raise RegistryError(f"unknown {self.kind} {name!r}{hint} (known: {known})") from None

    def _check_type(self, name: str, obj: object) -> None:
        module_name, _, attr = self._base_path.partition(":")
        base = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(f"{self.kind} {name!r}: {obj!r} is not a subclass of {base.__qualname__}")
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            raise RegistryError(f"{self.kind} {name!r}: {obj.__qualname__} does not implement {missing}")

    def _load_entry_points(self) -> None:
        """Register the built-in catalogue, then third-party entry points (once it succeeds: a
        clash raises on every call, not only the first)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            importlib.import_module(self._catalogue)
            for ep in entry_points(group=self.group):
                dist = getattr(getattr(ep, "dist", None), "name", "?")
                # not register_lazy: a value without ':' must fail on get(), not hide every other plug-in
                self._add(ep.name, _Entry(ep.value, f"entry point of package {dist!r}"))
            self._loaded = True


def _redefined(old: Union[str, type], new: Union[str, type]) -> bool:
    """Whether ``new`` is ``old`` defined again: two classes of one module and qualified name."""
    return (isinstance(old, type) and isinstance(new, type) and old.__module__ == new.__module__
            and old.__qualname__ == new.__qualname__)


def _describe(target: Union[str, type]) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


evaluators: Registry = Registry(
    "evaluator", "pigbench.evaluator:Evaluator", "pigbench.evaluators", catalogue="pigbench.evaluators"
)
adapters: Registry = Registry("dataset", "pigbench.adapter:DatasetAdapter", "pigbench.adapters", catalogue="pigbench.adapters")
