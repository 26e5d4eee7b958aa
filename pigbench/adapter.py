"""The dataset adapter contract: a source dataset in, preference records (or a ready split) out.

Most adapters only implement :meth:`DatasetAdapter.records`; the shared splitter
(:mod:`pigbench.splits`) turns records into per-user episodes. An adapter whose source already
fixes references per target (e.g. learn-user-pref) overrides :meth:`DatasetAdapter.split`.

A record that cannot be used is reported through :meth:`DatasetAdapter.skip` with its reason;
it never stops the load.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, ClassVar, Iterable, Mapping, Optional

from pigbench.protocol import PreferenceRecord


class DatasetError(ValueError):
    """The dataset is missing or malformed; the message names the file, row or column."""


class DatasetAdapter(ABC):
    """Base class of dataset adapters. Subclasses set the class attributes and ``records``."""

    name: ClassVar[str] = ""  # set by the registry
    description: ClassVar[str] = ""
    license: ClassVar[str] = "unknown"
    homepage: ClassVar[str] = ""
    default_reference_size: ClassVar[Optional[int]] = 8  # None: all but the held-out record (dynamic)
    env_var: ClassVar[str] = ""  # environment variable pointing to a local copy
    location_options: ClassVar[tuple[str, ...]] = ()  # options naming where data is kept, not what it is: not in the run key
    path_options: ClassVar[tuple[str, ...]] = ()  # options naming a local file or folder: made absolute in a recreate command
    shares_prompts: ClassVar[bool] = False  # a user's records answer one prompt (PASTA's turns): its split checks
    # leakage by image only, a declared deviation from the protocol, which check-dataset then honours

    def __init__(self, path: Optional[str] = None, options: Optional[Mapping[str, str]] = None) -> None:
        self.path = path
        self.options = dict(options or {})
        self.skipped: Counter[str] = Counter()  # reason -> count of records dropped while loading
        self.skip_examples: dict[str, list[str]] = {}

    @abstractmethod
    def records(self) -> Iterable[PreferenceRecord]:
        """Every usable record, in any order. Call :meth:`skip` for each unusable one."""

    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None):
        """Per-user episodes; see :func:`pigbench.splits.build_split`."""
        from pigbench.splits import build_split

        size = self.default_reference_size if reference_size is None else reference_size
        result = build_split(
            self.records(), dataset=self.name, seed=seed, reference_size=size,
            max_targets_per_user=max_targets_per_user,
        )
        result.skipped_records.update(self.skipped)
        for reason, examples in self.skip_examples.items():
            result.skip_examples.setdefault(reason, []).extend(examples)
        return result

    def skip(self, reason: str, where: str) -> None:
        """Record an unusable record: ``reason`` groups the count, ``where`` names file/row."""
        self.skipped[reason] += 1
        examples = self.skip_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(where)

    @classmethod
    def content_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` less :attr:`location_options` (where data is kept is not other data): those that
        key a run's store, name its results file and tell runs on other data apart in the report."""
        return {k: v for k, v in options.items() if k not in cls.location_options}

    def provenance(self) -> dict[str, Any]:
        """Source files or hub revision, for the results file: the :meth:`content_options`, and the
        location options apart under ``locations`` when given."""
        content = self.content_options(self.options)
        kept = {k: v for k, v in self.options.items() if k not in content}
        return {"path": self.path, "options": content, **({"locations": kept} if kept else {})}
