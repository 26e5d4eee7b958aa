"""The evaluator contract, and a helper base for evaluators that score one image at a time.

An evaluator is a class with a declared config dataclass and a batched ``predict``::

    @dataclass(frozen=True)
    class MyConfig(EvaluatorConfig):
        model_path: str = "org/model"

    class MyReward(ScalarEvaluator):
        kind = "scalar"; uses_references = False; needs = ("gpu", "weights")
        Config = MyConfig
        def setup(self): self.model = load(self.config.model_path, self.runtime.device)
        def score(self, requests): return [self.model(r.prompt, r.image.open()) for r in requests]

The runner calls, in order: ``check_requirements(config)`` (fail fast, nothing loaded), the
constructor, ``setup()`` (when there is work to do, and in the process that writes the results,
so that ``provenance`` can read the loaded model), then ``predict`` on batches of episodes whose
target gold is hidden. ``predict`` returns one :class:`Prediction` per episode, in order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Hashable, Literal, Mapping, Optional, Sequence, get_args

from pigbench.protocol import Episode, ImageRef, Label, Prediction, ReferencePair, label_from_delta

Kind = Literal["baseline", "scalar", "similarity", "judge", "reasoning"]
Need = Literal["gpu", "weights", "api-key", "network"]


class RequirementError(RuntimeError):
    """Something the evaluator needs is missing. The message says what, and how to get it."""


@dataclass(frozen=True)
class EvaluatorConfig:
    """Base of every evaluator's config. Fields must be JSON-serializable scalars, lists or dicts.

    The config hash identifies a run's predictions (with the evaluator name and version): change
    a field and cached predictions are not reused.
    """

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_options(cls, options: Mapping[str, str], owner: str = "") -> "EvaluatorConfig":
        """Build from ``key=value`` strings (``--option``), converting each by the field's default type.
        ValueError for an unknown key or an unparseable value, naming ``owner`` (the evaluator; default:
        the config class), or for one field given twice (``min-spread`` and ``min_spread``)."""
        owner = owner or cls.__qualname__
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, raw in options.items():
            name = key.replace("-", "_")
            if name not in fields:
                known = ", ".join(sorted(fields)) or "none"
                raise ValueError(f"unknown option {key!r} for {owner} (options: {known})")
            if name in given:
                raise ValueError(f"option {name} given twice ({given[name]} and {key}={raw}); give it once")
            given[name] = f"{key}={raw}"
            kwargs[name] = _convert(raw, fields[name], owner)
        return cls(**kwargs)

    def hash(self, evaluator_name: str, version: str) -> str:
        """ValueError naming the evaluator when a field's value is not JSON (a Path, say)."""
        try:
            payload = json.dumps(
                {"evaluator": evaluator_name, "version": version, "config": self.to_json()}, sort_keys=True
            )
        except TypeError as exc:
            raise ValueError(f"{evaluator_name}: its config must hold JSON values (strings, numbers, booleans, lists, "
                             f"dicts): {exc}") from None
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _convert(raw: str, f: dataclasses.Field, owner: str) -> Any:
    """Parse ``raw`` by the type of the field's default (or default factory's value); a negative
    zero becomes 0."""
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    else:
        default = None
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if isinstance(default, (int, float)):
            return type(default)(raw) + 0  # + 0: -0.0 is 0.0, one value, one config hash
        if isinstance(default, (list, tuple, dict)):
            value = json.loads(raw)
            return tuple(value) if isinstance(default, tuple) else value
        if raw.lower() in ("none", "null") and default is None:
            return None
        return raw
    except ValueError as exc:
        raise ValueError(f"option {f.name}={raw!r} for {owner}: {exc}") from None


@dataclass(frozen=True)
class Runtime:
    """How to run, not what to compute: never part of the config hash."""

    device: str = "cpu"
    batch_size: int = 16
    num_workers: int = 0
    cache_dir: Optional[str] = None  # where evaluators may persist embeddings (None: memory only)


class Evaluator(ABC):
    """Base class of all evaluators. Subclasses set the class attributes and implement ``predict``."""

    name: ClassVar[str] = ""  # set by the registry
    version: ClassVar[str] = "1"  # bump when outputs change for the same config
    kind: ClassVar[Kind] = "baseline"
    uses_references: ClassVar[bool] = False
    needs: ClassVar[tuple[Need, ...]] = ()
    description: ClassVar[str] = ""
    Config: ClassVar[type[EvaluatorConfig]] = EvaluatorConfig
    prepare_window: ClassVar[int] = 0  # episodes the runner passes to prepare() at a time; 0: never called
    # How the tie calibration (pigbench.calibration) turns score_a, score_b into Pick-a-Pic's two-way
    # probabilities: softmax of the scores times calibration_scale (1 for logits such as PickScore's;
    # the model's logit scale for raw CLIP cosines), or, with scores_are_probabilities, P(A) and P(B)
    # themselves. A subclass may set calibration_scale in setup() from the loaded model.
    calibration_scale: float = 1.0
    scores_are_probabilities: ClassVar[bool] = False

    def __init__(self, config: Optional[EvaluatorConfig] = None, runtime: Optional[Runtime] = None) -> None:
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} expects a {self.Config.__qualname__}, got {type(self.config).__name__}")
        self.runtime = runtime or Runtime()

    @classmethod
    def check_requirements(cls, config: EvaluatorConfig) -> None:
        """Raise :class:`RequirementError` if a package, weight file or key is missing. Loads nothing."""

    def setup(self) -> None:
        """Load models. Called once: before the first ``predict``, and in the process that writes the
        results even when every prediction is stored already (its ``provenance`` may read the model)."""

    @abstractmethod
    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        """One prediction per episode, in order. Episodes carry no gold label."""

    def prepare(self, episodes: Sequence[Episode]) -> None:
        """Optional look-ahead: ``predict`` will be asked for ``episodes`` next, in batches. Work that
        is faster done for all of them at once (embedding every image in one stream) may start here;
        it must not change any prediction. The runner ignores an error raised here (``predict``
        meets it again, per episode). Called only when ``prepare_window`` is set."""

    def provenance(self) -> dict[str, Any]:
        """Model ids or paths and their revisions or file hashes, dtype: recorded in the results."""
        return {}

    def model_sources(self) -> list[str]:
        """Where the models come from (hub ids, local paths), known before ``setup``: the runner stamps
        those that are local files or folders, and the cached commit of hub ids, into the run key
        (:mod:`pigbench.file_stamp`), so that weights replaced at the same path or a new hub commit
        are predicted again; a hub id not cached yet makes the runner set up before the key. Default:
        the config's string values; a subclass that also reads an environment variable adds the
        source it resolves to. The config's ``runtime_fields`` (a server address, an API key's
        variable) are left out."""
        runtime = getattr(self.config, "runtime_fields", ())
        values = [v for k, v in self.config.to_json().items() if k not in runtime]
        return [s for v in values for s in (v if isinstance(v, list) else [v]) if isinstance(s, str)]

    @property
    def config_hash(self) -> str:
        return self.config.hash(self.name, self.version)


def check_declaration(cls: type[Evaluator], name: str) -> None:
    """ValueError naming evaluator ``name`` when a class attribute that the runner or the results file
    relies on has a value it cannot use: ``Config`` must be a dataclass deriving from
    :class:`EvaluatorConfig`, ``version`` a string, ``kind`` one of :data:`Kind`, ``uses_references`` a bool."""
    kinds = get_args(Kind)
    config_ok = isinstance(cls.Config, type) and issubclass(cls.Config, EvaluatorConfig) and dataclasses.is_dataclass(cls.Config)
    for attr, ok, rule in (("Config", config_ok, "a frozen dataclass deriving from EvaluatorConfig (or ScalarConfig)"),
                           ("version", isinstance(cls.version, str), "a string, e.g. '1'"),
                           ("kind", cls.kind in kinds, f"one of {', '.join(kinds)}"),
                           ("uses_references", isinstance(cls.uses_references, bool), "True or False")):
        if not ok:
            raise ValueError(f"{name}: class attribute {attr} = {getattr(cls, attr)!r} must be {rule}")


def require_packages(evaluator: str, *modules: str, extra: str = "models", install: Optional[str] = None) -> None:
    """Fail fast when an optional package is not installed, saying which extra provides it
    (``install`` replaces that hint, e.g. "pip install pigbench-my-reward" for a plug-in)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        hint = install or f"pip install 'pigbench[{extra}]'"
        raise RequirementError(f"{evaluator} needs the Python package(s) {', '.join(missing)}; install them with: {hint}")


def require_local_folder(path: str, evaluator: str, env_var: str, what: str, flag: str) -> None:
    """Fail fast when ``path`` is not a local folder, for a setting that takes no hub id: "no such
    folder: PATH" (or "is a file, not a folder"), naming ``flag`` and ``env_var``. A mistyped relative
    path such as ``ckpt/lora`` would otherwise look like a hub id."""
    from pigbench.hub import local_copy_hint

    if not os.path.isdir(path):
        problem = f"{what} {path!r} is a file, not a folder" if os.path.exists(path) else f"no such folder: {path!r} ({what})"
        raise RequirementError(f"{evaluator}: {problem}; {local_copy_hint(flag, env_var)}.")


def resolve_local_or_hub(path: str, evaluator: str, env_var: str, what: str, flag: str = "--model-path",
                         default: str = "") -> None:
    """Fail fast when ``path`` is neither a local file/dir nor a hub id that can be had now.

    A hub id in the local cache is accepted; one that is not must be downloadable: not with
    ``HF_HUB_OFFLINE=1``, and not when the hub does not answer (asked once, without the hub
    library's retries). The message says how to download it (a local path that does not exist:
    ``default``, the published hub id, if given) and that ``flag`` (or ``env_var``, if not empty)
    points to a local copy. A setting that takes no hub id uses :func:`require_local_folder`.
    """
    from pigbench.hub import local_copy_hint, not_downloadable

    if os.path.exists(path):
        return
    if not _looks_like_hub_id(path):
        source = f" (`hf download {default} --local-dir DIR`)" if default else ""
        raise RequirementError(f"{evaluator}: {what} was not found at {path!r}. Download it{source}, "
                               f"then {local_copy_hint(flag, env_var)}.")
    problem = not_downloadable(cached=_in_hub_cache(path))
    if problem:
        raise RequirementError(
            f"{evaluator}: {what} {path!r} {problem}. Download it on a machine with internet "
            f"(`hf download {path} --local-dir DIR`), then {local_copy_hint(flag, env_var)}."
        )


def _looks_like_hub_id(path: str) -> bool:
    """Whether a ``path`` that does not exist reads as a hub id ``owner/name``: exactly one ``/``, not
    starting with ``.``, ``/`` or ``~``, and no other path separator of this system (Windows' ``\\``).
    Anything else is a local path that is missing."""
    return (path.count("/") == 1 and not path.startswith((".", "/", "~"))
            and not (os.sep != "/" and os.sep in path))


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, or no hub library: either way not usable offline
        return False
    return True


# --------------------------------------------------------------------------------------------
# Scalar scorers: score each (image, context) once, turn score pairs into predictions with tau.


@dataclass(frozen=True)
class ScalarConfig(EvaluatorConfig):
    """Config shared by scalar scorers. ``tie_threshold`` is tau of the protocol (raw-score units)."""

    tie_threshold: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tie_threshold) and self.tie_threshold >= 0):
            raise ValueError(f"tie_threshold must be a finite number >= 0, got {self.tie_threshold!r}")


@dataclass(frozen=True)
class ScoreRequest:
    """One image to score. ``references`` is empty for evaluators with ``uses_references = False``."""

    image: ImageRef
    prompt: str
    references: tuple[ReferencePair, ...] = field(default=())


class ScalarEvaluator(Evaluator):
    """Base for evaluators that give each image a real score; delta = s(A) - s(B).

    Subclasses implement :meth:`score`. Each distinct (image content, prompt, references) is
    scored once per batch of episodes and memoized for the evaluator's lifetime. An image that
    fails to score, or gets a NaN or infinite score, gives an INVALID prediction carrying the reason.
    """

    kind: ClassVar[Kind] = "scalar"
    uses_prompt: ClassVar[bool] = True
    Config: ClassVar[type[EvaluatorConfig]] = ScalarConfig

    def __init__(self, config: Optional[EvaluatorConfig] = None, runtime: Optional[Runtime] = None) -> None:
        super().__init__(config, runtime)
        self._memo: dict[Hashable, tuple[float, Optional[str]]] = {}

    @abstractmethod
    def score(self, requests: Sequence[ScoreRequest]) -> Sequence[float]:
        """One float per request (higher = better for this user). May raise; see class docstring."""

    def request_key(self, request: ScoreRequest) -> Hashable:
        """What makes two requests the same score. Override to widen sharing (e.g. ignore prompt)."""
        refs = tuple((r.preferred.content_hash, r.rejected.content_hash) for r in request.references)
        return (request.image.content_hash, request.prompt if self.uses_prompt else None, refs)

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        pending: dict[Hashable, ScoreRequest] = {}
        pairs = []
        for ep in episodes:
            refs = ep.references if self.uses_references else ()
            reqs = [ScoreRequest(img, ep.target.prompt, refs) for img in (ep.target.image_a, ep.target.image_b)]
            keys = [self.request_key(r) for r in reqs]
            for k, r in zip(keys, reqs):
                if k not in self._memo:
                    pending.setdefault(k, r)
            pairs.append(keys)
        self._score_pending(pending)
        tau = getattr(self.config, "tie_threshold", 0.0)
        out = []
        for ep, (ka, kb) in zip(episodes, pairs):
            (sa, ea), (sb, eb) = self._memo[ka], self._memo[kb]
            err = ea or eb
            label = Label.INVALID if err else label_from_delta(sa - sb, tau)
            out.append(Prediction(ep.sample_id, label, score_a=_finite(sa), score_b=_finite(sb), error=err))
        return out

    def _score_pending(self, pending: dict[Hashable, ScoreRequest]) -> None:
        keys = list(pending)
        bs = max(1, self.runtime.batch_size)
        for i in range(0, len(keys), bs):
            chunk = keys[i : i + bs]
            try:
                self._memoize_scores(chunk, [pending[k] for k in chunk])
            except Exception:  # isolate the failing request(s), one by one
                for k in chunk:
                    try:
                        self._memoize_scores([k], [pending[k]])
                    except Exception as exc:
                        self._memo[k] = (math.nan, f"{type(exc).__name__}: {exc}")

    def _memoize_scores(self, keys: list[Hashable], requests: list[ScoreRequest]) -> None:
        """Score ``requests`` in one ``score`` call and memoize each under its key; raises what
        ``score`` raises, and RuntimeError when it returns another number of scores."""
        scores = list(self.score(requests))
        if len(scores) != len(requests):
            plural = "" if len(requests) == 1 else "s"
            raise RuntimeError(f"score() returned {len(scores)} scores for {len(requests)} request{plural}")
        for k, s in zip(keys, scores):  # an inf (fp16 overflow, say) would decide a pair yet be stored as no score
            s = float(s)
            self._memo[k] = (s, None if math.isfinite(s) else f"score is {s}, not a finite number")


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None
