"""The runner: split a dataset, stream episodes in batches to an evaluator, store, score, report.

``run(RunConfig(...))`` is what ``python -m pigbench.run`` calls. Contracts:

* Predictions are committed to the per-run store (:mod:`pigbench.store`) batch by batch; a run
  restarted with the same evaluator config, split and dataset options resumes where it stopped,
  and its final metrics equal an uninterrupted run's. The evaluator is set up even when every
  prediction is stored already, so that the results file records its model provenance.
* An episode whose prediction raises is recorded INVALID with its error; the run goes on. If the
  share of failed samples (of those predicted now and those reused from the store) exceeds
  ``max_error_rate`` (after ``min_samples_for_error_rate``), the
  run stops with :class:`RunAborted` summarising the reasons; finished work stays in the store.
  A restarted run predicts the failed episodes again (the server may be up now).
* ``swap=True`` asks every episode in both A/B orders and combines the answers by the protocol's
  position-swap rule, keeping both raw answers.
* ``output=None`` writes no results file: the results dict comes back in :class:`RunOutcome` only
  (predictions are still stored under ``cache_dir``). Using this from Python: docs/python_api.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import pigbench
from pigbench.adapter import DatasetAdapter
from pigbench.distributed import RunStores, World, launched_world, shard
from pigbench.evaluator import Evaluator, RequirementError, Runtime, ScalarEvaluator, check_declaration
from pigbench.file_stamp import damaged_message, damaged_safetensors, local_files_stamp, uncached_hub_ids
from pigbench.metrics import compute_metrics
from pigbench.protocol import Episode, ImageRef, Label, Prediction, combine_swapped
from pigbench.registry import adapters, evaluators
from pigbench.results import answer_quality, error_reason, failure_summary, judged_from_rows, prediction_rows, write_results
from pigbench.splits import SplitResult
from pigbench.store import PredictionStore, default_cache_dir

DEFAULT_EVALUATOR = "color-reference"
DEFAULT_DATASET = "demo"


@dataclass
class RunConfig:
    """Everything that defines a run. The CLI, config files and the Python API all build this."""

    evaluator: str = DEFAULT_EVALUATOR  # registry name of the evaluator
    dataset: str = DEFAULT_DATASET  # registry name of the dataset adapter
    dataset_path: Optional[str] = None  # local copy of the dataset (adapter-specific default otherwise)
    dataset_options: dict[str, str] = field(default_factory=dict)  # adapter options (key=value)
    reference_size: Optional[int] = None  # K reference pairs per user; None = dataset default
    limit: Optional[int] = None  # evaluate only the first N targets of the split
    seed: int = 0  # split seed (reference/target choice and A/B order)
    batch_size: int = 16  # episodes per predict() call
    device: str = "cpu"  # e.g. cpu, cuda, cuda:1
    num_workers: int = 0  # image-decoding worker processes (0: the evaluator decides)
    output: Optional[str] = "results"  # results directory; files go to <output>/<dataset>/; None: write none
    tie_threshold: Optional[float] = None  # tau; sets the evaluator config field tie_threshold
    calibration_fraction: Optional[float] = None  # calibrate tau on this share of the users (pigbench.calibration)
    swap: bool = False  # ask both A/B orders (generative judges)
    model_path: Optional[str] = None  # sets the evaluator config field model_path
    options: dict[str, str] = field(default_factory=dict)  # other evaluator config fields (key=value)
    variant: Optional[str] = None  # results file suffix; derived from the non-default settings if None
    cache_dir: str = field(default_factory=default_cache_dir)
    max_error_rate: float = 0.5  # stop when more than this share of samples fails ...
    min_samples_for_error_rate: int = 20  # ... once at least this many were attempted
    progress: bool = True  # show a progress bar on stderr
    n_bootstrap: int = 1000  # bootstrap resamples for CIs
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        """Refuse settings no run can use, naming the field (and its command-line flag)."""
        for name, ok, rule in (
            ("batch_size", self.batch_size >= 1 or self.device == "external", ">= 1"),  # 0: saved outputs, no batches
            ("limit", self.limit is None or self.limit >= 1, ">= 1 (leave it out for every target)"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("tie_threshold", self.tie_threshold is None or 0 <= self.tie_threshold < math.inf,
             ">= 0 and finite (an infinite tau ties every pair and is no JSON number)"),
            ("max_error_rate", 0 <= self.max_error_rate <= 1, "between 0 and 1"),
            ("calibration_fraction", self.calibration_fraction is None or 0 < self.calibration_fraction < 1,
             "between 0 and 1 (exclusive)"),
            ("n_bootstrap", self.n_bootstrap >= 0, ">= 0 (0: no confidence intervals)"),
            ("bootstrap_seed", self.bootstrap_seed >= 0, ">= 0 (numpy's generators take no negative seed)"),
        ):
            if not ok:
                flag = {"calibration_fraction": " (--calibrate-tie-threshold)", "n_bootstrap": "",
                        "bootstrap_seed": ""}.get(  # the bootstrap settings have no flag
                    name, f" (--{name.replace('_', '-')})")
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}{flag}")
        if self.calibration_fraction is not None and self.tie_threshold is not None:
            raise ValueError("--tie-threshold and --calibrate-tie-threshold both set tau; give one of them")
        if self.variant is not None and any(c in self.variant for c in "/\\"):  # it names a file in <output>/<dataset>/
            raise ValueError(f"variant must be a file name suffix without slashes, got {self.variant!r} (--variant)")


def writable_dir(path: Path, what: str) -> None:
    """Create ``path`` if needed; raise ValueError, naming ``what`` and why, when it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the {what} {str(path)!r}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"the {what} {str(path)!r} is not writable")


def check_device(device: str) -> None:
    """Raise unless ``device`` is "cpu" or a CUDA, MPS or XPU device torch has on this machine (torch
    is imported only for other devices)."""
    if device == "cpu":
        return
    try:
        import torch
    except ImportError:
        raise RequirementError(f"--device {device} needs torch: pip install 'pigbench[models]'") from None
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a device torch knows ({exc}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU on this machine; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif dev.type in ("mps", "xpu"):
        # torch.backends.mps: torch.mps has no is_available before recent torch releases (pyproject allows 2.6)
        if not (torch.backends.mps if dev.type == "mps" else torch.xpu).is_available():
            raise ValueError(f"--device {device}: torch {torch.__version__} has no {dev.type} device on this machine; "
                             "use --device cpu")
        count = 1 if dev.type == "mps" else torch.xpu.device_count()  # a Mac has one MPS device
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} {dev.type} device(s), "
                             f"{dev.type}:0 to {dev.type}:{count - 1}")
    elif dev.type != "cpu":  # meta, xla, ...: no evaluator computes scores there
        raise ValueError(f"--device {device}: pigbench runs on cpu, cuda, mps or xpu devices, not {dev.type}")


class RunAborted(RuntimeError):
    """Too many samples failed; the message summarises the reasons. Finished work is kept."""


@dataclass
class RunOutcome:
    """What :func:`run` returns: the results dict (the results file's content; without its
    ``predictions`` entry when no file was written) and where it was written."""

    results: dict[str, Any]
    results_path: Optional[Path]  # None when ``RunConfig.output`` is None
    resumed: int  # predictions reused from the store
    computed: int  # predictions computed in this invocation


def check_settings(config: RunConfig) -> Evaluator:
    """What a run checks before reading the dataset: the device, the dataset's name, the evaluator's
    options and requirements (:func:`build_evaluator`, which it returns, nothing loaded), that a
    similarity evaluator gets references (``--reference-size`` not 0), that ``--swap`` is not asked of
    an evaluator scoring each image alone (a :class:`ScalarEvaluator`), and last, so that a refused
    setting creates no folder, the results and store directories. Raises ValueError, RegistryError
    or RequirementError naming the setting."""
    check_device(config.device)
    adapters.get(config.dataset)  # a misspelled name fails here, not after creating <output>/<name>/
    evaluator = build_evaluator(config)
    if config.reference_size == 0 and evaluator.kind == "similarity":
        raise ValueError(f"{config.evaluator} scores images by similarity to the user's reference pairs; "
                         "--reference-size 0 leaves none (give 1 or more)")
    if config.swap and not supports_swap(type(evaluator)):
        raise ValueError(f"--swap: {config.evaluator} scores each image alone, so the A/B order cannot change its "
                         "answer; swap applies to evaluators that see both images at once (judges)")
    if config.output is not None:
        writable_dir(Path(config.output) / config.dataset, "results directory (--output)")
    writable_dir(Path(config.cache_dir) / "runs", "prediction store directory (--cache-dir)")
    return evaluator


def supports_swap(cls: type[Evaluator]) -> bool:
    """Whether ``--swap`` applies: the evaluator sees both images at once (a :class:`ScalarEvaluator`
    scores each alone, so the A/B order cannot change its answer)."""
    return not issubclass(cls, ScalarEvaluator)


def build_evaluator(config: RunConfig) -> Evaluator:
    """The evaluator instance for ``config`` (requirements checked, nothing loaded yet). A flag and an
    ``--option`` for the same field must agree in value, however each is spelled (0 and 0.0); the class
    attributes the results file records are checked first, so that no run ends unable to write it."""
    cls = evaluators.get(config.evaluator)
    check_declaration(cls, config.evaluator)
    options = dict(config.options)

    def parsed(name: str, raw: str) -> Any:
        return getattr(cls.Config.from_options({name: raw}, owner=config.evaluator), name)

    for name, value in (("model_path", config.model_path), ("tie_threshold", config.tie_threshold)):
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        key = next((k for k in options if k.replace("-", "_") == name), name)  # tie-threshold names it too
        if key in options and parsed(name, options[key]) != parsed(name, str(value)):
            raise ValueError(f"{flag} {value} and --option {key}={options[key]} disagree; give one of them")
        options[key] = str(value)
    ev_config = cls.Config.from_options(options, owner=config.evaluator)
    cls.check_requirements(ev_config)
    runtime = Runtime(device=config.device, batch_size=config.batch_size, num_workers=config.num_workers,
                      cache_dir=config.cache_dir)
    evaluator = cls(ev_config, runtime)
    evaluator.name = config.evaluator  # the name it was asked for, also for aliases
    return evaluator


def load_split(config: RunConfig) -> tuple[DatasetAdapter, SplitResult]:
    """The adapter and its split, cut to ``config.limit`` targets (fingerprint recomputed)."""
    adapter = adapters.get(config.dataset)(config.dataset_path, config.dataset_options)
    split = adapter.split(seed=config.seed, reference_size=config.reference_size)
    split.limit(config.limit)
    if not split.episodes:
        summary = split.summary()
        skipped = {**summary["skipped_users"], **summary["skipped_records"]}
        why = "; ".join(f"{n} x {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1])) or "it has no records"
        raise ValueError(f"dataset {config.dataset!r} produced no targets. Skipped: {why}")
    return adapter, split


def run_key(evaluator: Evaluator, split: SplitResult, swap: bool, dataset_options: Mapping[str, str]) -> str:
    """What a stored prediction depends on: the evaluator and its config, the split as the adapter
    made it, before ``--limit`` or the calibration's held-out users cut it (so a limited run and the
    full run share one store: a target is the same episode in both), what its episodes show that
    the fingerprint leaves out (:func:`_inputs_digest`), the dataset options
    (which can change the images, e.g. demo's ``size`` or PIP's ``images`` folder, but not the
    split's fingerprint; the caller leaves out location-only ones, :func:`content_options`), swapping, for a config ``dtype`` of ``auto`` the device type, which
    chooses the dtype (half precision on CUDA, float32 on CPU), and the evaluator's model sources as
    resolved (an environment variable's included) with the stamp of their local files and of the
    commits their cached hub snapshots resolve to (:mod:`pigbench.file_stamp`: a model saved again
    at the same path, or a new hub commit in the cache, is predicted again)."""
    whole, whole_fp = (split.episodes, split.fingerprint) if split.uncut is None else (split.uncut, split.uncut_fingerprint)
    key = f"{evaluator.name}__{evaluator.config_hash}__{whole_fp}__in{_inputs_digest(whole)}"
    if stamp := local_files_stamp(evaluator.model_sources(), read_local=not served(evaluator)):
        key += "__src" + stamp
    if getattr(evaluator.config, "dtype", None) == "auto":
        key += "__auto-" + evaluator.runtime.device.split(":")[0]
    if dataset_options:
        key += "__opt" + _options_digest(dataset_options)
    return key + ("__swap" if swap else "")


def served(evaluator: Evaluator) -> bool:
    """Whether the evaluator's models run on a server (``backend=openai``: judges, PIGReward), so
    its model names are the server's to resolve, not local files or cached hub snapshots."""
    return getattr(evaluator.config, "backend", None) == "openai"


def _inputs_digest(episodes: Sequence[Episode]) -> str:
    """Hash of the prompts, image ids and image stamps (:meth:`ImageRef.stamp`: the content hash
    the adapter's split computed, or for an image not hashed yet its file's size; an image file
    written again, say PIP's images rendered anew, changes it) of each episode's target and
    references (with their rankings), in order: an edited prompt or an image file the dataset now
    names instead changes an evaluator's input without changing the split's fingerprint. No image
    file is read here."""
    h = hashlib.sha256()
    refs_seen: dict[int, str] = {}  # a user's episodes share one references tuple: hash it once
    for ep in episodes:
        refs = refs_seen.get(id(ep.references))
        if refs is None:
            refs = refs_seen[id(ep.references)] = json.dumps(
                [[r.prompt, _image(r.preferred), _image(r.rejected), [[_image(im), rank] for im, rank in r.ranking]]
                 for r in ep.references])
        t = ep.target
        h.update(json.dumps([t.prompt, _image(t.image_a), _image(t.image_b)]).encode() + b"\t" + refs.encode() + b"\n")
    return h.hexdigest()[:12]


def _image(image: ImageRef) -> str:
    stamp = image.stamp()
    return f"{image.id}@{stamp}" if stamp else image.id


def content_options(config: RunConfig) -> dict[str, str]:
    """The run's dataset options that key the store and name the results file
    (:meth:`DatasetAdapter.content_options`: a folder the images are kept in is left out)."""
    return adapters.get(config.dataset).content_options(config.dataset_options)


def _options_digest(options: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(options), sort_keys=True).encode()).hexdigest()[:12]


def run(config: RunConfig, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> RunOutcome:
    """Run (or resume) one evaluation and write its results file; see the module docstring.

    Launched by torchrun or ``accelerate launch``, each rank evaluates its share of the users and
    rank 0 writes the results file, identical to a one-process run's; every rank returns the same
    outcome (:mod:`pigbench.distributed`)."""
    start = time.time()
    with launched_world() as world:
        config = dataclasses.replace(config, device=world.bind_device(config.device),
                                     progress=config.progress and world.is_main)
        evaluator = check_settings(config)
        adapter, split = load_split(config)
        calibrating = config.calibration_fraction is not None
        if calibrating:  # sets the model up (once) to score the held-out users
            calibrate_on_held_out_users(evaluator, split, config, log, world)
        # setup() downloads a hub model not cached yet: set up first, so that the key stamps the commit
        # downloaded, as the next run's key will (else that run would predict every sample again); on
        # every rank when any rank lacks it (hosts with their own caches), so that all ranks stamp a commit
        is_set_up = calibrating
        to_download = [] if served(evaluator) else uncached_hub_ids(evaluator.model_sources())
        if not is_set_up and any(world.all_gather(bool(to_download))):
            with world.together(RunAborted):
                set_up(evaluator, config.evaluator)
            is_set_up = True
        key = run_key(evaluator, split, config.swap, content_options(config))
        stores = RunStores(Path(config.cache_dir) / "runs", key, world)
        done = stores.done_ids()
        todo = [e for e in split.episodes if e.sample_id not in done]
        resumed = len(split.episodes) - len(todo)
        if resumed and world.is_main:
            log(f"resuming: {resumed} of {len(split.episodes)} predictions found in {stores.main_path} "
                "(samples that failed are predicted again)")
        mine = shard(todo, world)
        with world.together(RunAborted):
            if (mine or world.is_main) and not is_set_up:  # rank 0 writes the provenance, even with nothing to do
                set_up(evaluator, config.evaluator)
            if mine:
                with stores.open_own() as store, frozen_setup_objects():
                    reused = round(resumed * len(mine) / len(todo))  # this process's share of the reused ones
                    _predict_all(evaluator, mine, store, config, log, reused)
        outcome = None
        with world.together(RunAborted):
            if world.is_main:
                results, path = write_run_results(config, evaluator, adapter, split, stores.merge(), resumed, start,
                                                  world.size)
                outcome = RunOutcome(results, path, resumed, len(todo))
        return world.broadcast(outcome)


def calibrate_on_held_out_users(evaluator: Evaluator, split: SplitResult, config: RunConfig, log: Callable[[str], None],
                                world: World) -> None:
    """Pick-a-Pic's tie-threshold calibration (:mod:`pigbench.calibration`) on the targets of a seeded
    ``config.calibration_fraction`` of the users; ``split`` keeps the other users' targets, and the
    evaluator's tau and ``tie_threshold_source`` (the calibration record, with ``held_out_fraction``)
    are set. Sets the evaluator up (``setup``), after the checks; the caller does not set it up again.
    Under several ranks, rank 0 calibrates and every rank takes its result (one tau, hence one run key)."""
    from pigbench.calibration import apply_calibration, calibrate_tie_threshold, calibration_split

    if not hasattr(evaluator.config, "tie_threshold"):
        raise ValueError(f"{config.evaluator} has no tie threshold to calibrate (it answers A, B or TIE itself)")
    calibration, targets = calibration_split(split.episodes, config.calibration_fraction, config.seed)
    result = None
    with world.together(RunAborted):
        set_up(evaluator, config.evaluator)
        if world.is_main:
            result = calibrate_tie_threshold(evaluator, calibration, swap=config.swap)
    result = world.broadcast(result)
    apply_calibration(evaluator, result)
    evaluator.tie_threshold_source["held_out_fraction"] = config.calibration_fraction
    if world.is_main:
        log(f"tie threshold calibrated on {len(calibration)} targets of {len({e.user_id for e in calibration})} held-out "
            f"users: probability gap t = {result.probability_threshold}, tau = {result.tau:g}; "
            f"evaluating the other users' {len(targets)} targets")
    split.keep(targets)


def set_up(evaluator: Evaluator, name: str) -> None:
    """``evaluator.setup()``; a file it cannot read (model libraries raise OSError for a model that
    is neither a local folder nor downloadable, safetensors a SafetensorError for a zero-byte or
    truncated file) is a :class:`RequirementError` naming the evaluator, and the damaged files among
    its local model files (:meth:`Evaluator.model_sources`)."""
    try:
        evaluator.setup()
    except OSError as exc:
        raise RequirementError(f"{name}: setup could not load a file it needs: {exc}") from exc
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":
            raise
        raise RequirementError(f"{name}: {damaged_message(damaged_safetensors(evaluator.model_sources()), exc)}") from exc


def write_run_results(
    config: RunConfig, evaluator: Evaluator, adapter: DatasetAdapter, split: SplitResult,
    predictions: dict[str, dict], resumed: int, start: float, world_size: int = 1,
) -> tuple[dict[str, Any], Optional[Path]]:
    """Score ``predictions`` (one JSON dict per episode of ``split``, as :meth:`Prediction.to_json`
    gives and the store keeps, by sample id) against the gold labels and write the
    results file with its provenance; returns the results dict and its path (with ``config.output``
    None, the dict alone, no file written, and None). Shared by :func:`run`
    and ``pigbench score`` (saved outputs). ``world_size``: processes that computed predictions."""
    rows = prediction_rows(split.episodes, predictions)
    metrics = compute_metrics(judged_from_rows(rows), n_bootstrap=config.n_bootstrap, seed=config.bootstrap_seed)
    results = _results_dict(config, evaluator, adapter, split, metrics, rows, resumed, time.time() - start, world_size)
    if config.output is None:
        return results, None
    path = Path(config.output) / config.dataset / f"{evaluator.name}{_variant_suffix(config, evaluator)}.json"
    write_results(path, results, rows)
    return results, path


def _predict_all(
    evaluator: Evaluator, todo: list[Episode], store: PredictionStore, config: RunConfig, log: Callable[[str], None],
    reused: int = 0,
) -> None:
    """Predict ``todo`` into ``store`` under the error budget. ``reused``: successful predictions of
    this run already in the store; they count as samples that did not fail, so a resumed run (or a
    rerun of a finished one, which predicts only its failed samples again) is held to the rate of
    the whole run, not of its remainder."""
    from tqdm import tqdm

    failures: Counter[str] = Counter()
    attempted = 0
    bar = tqdm(total=len(todo), disable=not config.progress, unit="sample", desc=evaluator.name, file=sys.stderr)
    def check_budget(final: bool) -> None:
        """Stop when too many samples failed: once ``min_samples_for_error_rate`` were attempted or
        reused, and at the end of a smaller run."""
        failed, samples = sum(failures.values()), reused + attempted
        if (final or samples >= config.min_samples_for_error_rate) and failed > config.max_error_rate * samples:
            reasons = "\n".join(f"  {n} x {r}" for r, n in failures.most_common(10))
            raise RunAborted(
                f"{failed} of {samples} samples failed (more than {config.max_error_rate:.0%}); "
                f"stopping. {attempted} predictions are saved in {store.path}: a rerun reuses the successful "
                f"ones and predicts the failed ones again.\n"
                f"Most common reasons:\n{reasons}"
            )

    try:
        for batch, preds in predict_batches(evaluator, todo, config.batch_size, config.swap, log):
            store.add(preds)
            attempted += len(batch)
            failures.update(error_reason(p.error) for p in preds if p.error is not None)
            bar.update(len(batch))
            check_budget(final=False)
    finally:
        bar.close()
    check_budget(final=True)
    if failures:
        log(f"{sum(failures.values())} samples failed and were recorded as INVALID:")
        for reason, n in failures.most_common(10):
            log(f"  {n} x {reason}")


_FROZEN_DEPTH = [0]  # frozen_setup_objects blocks open in this process


@contextlib.contextmanager
def frozen_setup_objects() -> Iterator[None]:
    """Collect garbage once, then keep every surviving object (the split, the model, library state)
    out of the garbage collector's passes until the block ends (:func:`gc.freeze`). A full
    collection in the prediction loop walks every live object: one took 0.69 s, with the device
    idle, in a 4.6 s scoring window (docs/benchmarks.md). Nested blocks unfreeze with the
    outermost; a freeze made elsewhere is released with it too."""
    _FROZEN_DEPTH[0] += 1
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        _FROZEN_DEPTH[0] -= 1
        if not _FROZEN_DEPTH[0]:
            gc.unfreeze()


def predict_batches(
    evaluator: Evaluator, episodes: Sequence[Episode], batch_size: int, swap: bool = False,
    log: Callable[[str], None] = lambda m: None,
) -> Iterator[tuple[Sequence[Episode], list[Prediction]]]:
    """(batch, predictions) for ``episodes`` in batches of ``batch_size``, as the runner predicts
    them: when the evaluator has a ``prepare_window``, each window of that many episodes (whole
    batches) is first passed to ``evaluator.prepare``. A failing prepare costs only speed: the first
    failure is logged, predictions go on (they meet the problem again, per episode)."""
    step = max(1, batch_size)
    window = -(-evaluator.prepare_window // step) * step if evaluator.prepare_window > 0 else 0
    prepare_failed = False
    for i in range(0, len(episodes), step):
        if window and i % window == 0:
            try:
                evaluator.prepare([e.without_gold() for e in episodes[i : i + window]])
            except Exception as exc:
                if not prepare_failed:
                    log(f"{evaluator.name}.prepare failed ({type(exc).__name__}: {exc}); predictions go on")
                prepare_failed = True
        batch = episodes[i : i + step]
        yield batch, _predict_swapped(evaluator, batch) if swap else predict_isolated(evaluator, batch)


def predict_isolated(evaluator: Evaluator, batch: Sequence[Episode]) -> list[Prediction]:
    """``evaluator.predict`` on episodes without gold; a failing batch is retried one episode at a
    time and each failing episode becomes INVALID with its error. Output order, ids, strict JSON
    values (no NaN or infinity) and that a prediction with an error is INVALID are checked."""
    blind = [e.without_gold() for e in batch]
    try:
        preds = evaluator.predict(blind)
        _check_output(evaluator, blind, preds)
        return preds
    except Exception as exc:
        if len(batch) == 1:
            return [Prediction.invalid(batch[0].sample_id, f"{type(exc).__name__}: {exc}")]
    return [p for e in batch for p in predict_isolated(evaluator, [e])]


def _check_output(evaluator: Evaluator, episodes: Sequence[Episode], preds: Sequence[Prediction]) -> None:
    if len(preds) != len(episodes):
        raise RuntimeError(f"{evaluator.name}.predict returned {len(preds)} predictions for {len(episodes)} episodes")
    for e, p in zip(episodes, preds):
        if not isinstance(p, Prediction) or p.sample_id != e.sample_id or not isinstance(p.label, Label):
            raise RuntimeError(f"{evaluator.name}.predict returned {p!r} for sample {e.sample_id!r} (wrong order or type)")
        if p.error is not None and p.label != Label.INVALID:  # failed (the store's rule, "" too), yet it would be scored
            raise RuntimeError(f"{evaluator.name}.predict returned label {p.label.value} with an error for sample "
                               f"{e.sample_id!r}: {p.error!r}")
        try:  # the store keeps strict JSON: a value that is not (a numpy float, a tensor, NaN) fails only this sample
            json.dumps(p.to_json(), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RuntimeError(f"{evaluator.name}.predict returned a prediction for sample {e.sample_id!r} "
                               f"that is not JSON ({exc})") from None


def _predict_swapped(evaluator: Evaluator, batch: Sequence[Episode]) -> list[Prediction]:
    """Protocol section 3 position swap: ask (A, B) and (B, A), map the second back, combine.

    The label follows :func:`~pigbench.protocol.combine_swapped`, unless an order failed (an
    ``error``: a server down): then the sample failed, INVALID with that error and no scores, and a
    resumed run predicts it again (an answer that did not parse is no failure: the other order's
    is used). The rest of the prediction (text, dimensions, extra) is the first order's, or the
    second's mapped back when only that one answered. With scores from both orders,
    ``score_a``/``score_b`` are their means (each order's are in ``extra["swap"]``).
    ``extra["swap"]["other_invalid_reason"]`` keeps the parse failure of the order not shown, so
    that the results' ``answer_quality`` counts every unparseable answer, and
    ``extra["swap"]["other_served"]`` its ``served`` (who answered it, from a server).
    """
    firsts = predict_isolated(evaluator, batch)
    seconds = predict_isolated(evaluator, [e.swapped() for e in batch])
    out = []
    decisive = {Label.A, Label.B}
    for p1, p2 in zip(firsts, seconds):
        back = p2.swapped()
        label = combine_swapped(p1.label, back.label)
        shown, other = (back, p1) if p1.label == Label.INVALID and back.label != Label.INVALID else (p1, back)
        swap: dict[str, Any] = {
            "first": p1.label.value,
            "second_mapped_back": back.label.value,
            "raw_first": p1.raw_text,
            "raw_second": p2.raw_text,
            "inconsistent": p1.label in decisive and back.label in decisive and p1.label != back.label,
        }
        scores = [(p.score_a, p.score_b) for p in (p1, back)]
        if all(a is not None and b is not None for a, b in scores):
            swap["scores_first"], swap["scores_second_mapped_back"] = scores
            score_a, score_b = ((scores[0][i] + scores[1][i]) / 2 for i in (0, 1))
        else:
            score_a, score_b = shown.score_a, shown.score_b
        if other.extra.get("invalid_reason"):
            swap["other_invalid_reason"] = other.extra["invalid_reason"]
        if other.extra.get("served"):
            swap["other_served"] = other.extra["served"]
        error = p1.error if p1.error is not None else p2.error  # "" failed too (the store's rule)
        if error is not None:
            label, score_a, score_b = Label.INVALID, None, None
        out.append(dataclasses.replace(shown, label=label, score_a=score_a, score_b=score_b, error=error,
                                       extra={**shown.extra, "swap": swap}))
    return out


def _variant_suffix(config: RunConfig, evaluator: Evaluator) -> str:
    """The results file suffix: ``config.variant``, else the settings that make this run differ from
    the default one. The config counts by its hash, so fields left out of it (a judge's server
    address or concurrency) never make a file of their own for the same predictions."""
    if config.variant is not None:
        return f"__{config.variant}" if config.variant else ""
    parts = []
    if config.reference_size is not None:
        parts.append(f"k{config.reference_size}")
    if evaluator.config_hash != evaluator.Config().hash(evaluator.name, evaluator.version):
        parts.append(f"cfg{evaluator.config_hash[:8]}")
    if config.calibration_fraction is not None:
        parts.append(f"cal{config.calibration_fraction:g}")
    if config.swap:
        parts.append("swap")
    if config.seed != 0:
        parts.append(f"seed{config.seed}")
    if config.limit is not None:
        parts.append(f"limit{config.limit}")
    if options := content_options(config):
        text = "-".join(f"{k}{v}" for k, v in sorted(options.items()))
        # readable when short and safe in a file name (size32), else a digest (a folder path as a value)
        safe = len(text) <= 40 and re.fullmatch(r"[A-Za-z0-9.=+-]+", text)
        parts.append(f"opt-{text}" if safe else f"opt{_options_digest(options)}")
    return "__" + "_".join(parts) if parts else ""


def _results_dict(
    config: RunConfig, evaluator: Evaluator, adapter: DatasetAdapter, split: SplitResult,
    metrics: dict[str, Any], rows: list[dict], resumed: int, wall: float, world_size: int,
) -> dict[str, Any]:
    summary = split.summary()
    provenance = _json_provenance(evaluator)
    return {
        "schema_version": "1.0",
        "evaluator": {
            "name": evaluator.name,
            "variant": _variant_suffix(config, evaluator)[2:] or None,
            "version": evaluator.version,
            "kind": evaluator.kind,
            "uses_references": evaluator.uses_references,
            "description": evaluator.description,
            "config": evaluator.config.to_json(),
            "config_hash": evaluator.config_hash,
            "tie_threshold": getattr(evaluator.config, "tie_threshold", None),
            "tie_threshold_source": getattr(evaluator, "tie_threshold_source", None) or "fixed",
            "swap": config.swap,
            "models": provenance,
        },
        "dataset": {"name": config.dataset, "source": adapter.provenance(), "description": adapter.description,
                    "license": adapter.license},
        "split": {
            "seed": split.seed,
            "reference_size": summary["reference_size"],
            "fingerprint": split.fingerprint,
            "users": split.users,
            "targets": len(split.episodes),
            "targets_before_limit": summary["targets_before_limit"],
            "skipped_users": summary["skipped_users"],
            "skipped_records": summary["skipped_records"],
            "skip_examples": summary["skip_examples"],
        },
        "metrics": metrics,
        "failures": failure_summary(rows),
        "answer_quality": answer_quality(rows),
        "provenance": {
            "pigbench_version": pigbench.__version__,
            **_git_state(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": _command(),
            "hardware": _hardware(config.device),
            "device": config.device,
            "batch_size": config.batch_size,
            "wall_time_s": round(wall, 3),
            "resumed_samples": resumed,
            "world_size": world_size,
        },
    }


def _json_provenance(evaluator: Evaluator) -> dict[str, Any]:
    """``evaluator.provenance()``; ValueError naming the evaluator unless it is a dict of JSON values
    (raised before any file is written; the predictions stay in the store for the rerun)."""
    provenance = evaluator.provenance()
    try:
        if not isinstance(provenance, dict):
            raise TypeError(f"it returned a {type(provenance).__name__}")
        json.dumps(provenance)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{evaluator.name}.provenance() must return a dict of JSON values (strings, numbers, "
                         f"booleans, lists, dicts; str() a dtype or a path): {exc}. The predictions are saved: "
                         "fix it and rerun the same command") from None
    return provenance


def _command() -> str:
    """This process's command line: ``python -m MODULE ARGS`` when run as a module (its
    ``sys.argv[0]`` is then the module's file, e.g. run.py), else the program's name and arguments."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else Path(sys.argv[0]).name
    return " ".join([program, *sys.argv[1:]])


def _git_state() -> dict[str, Any]:
    root = Path(pigbench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    if commit.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def _hardware(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")  # only report what the evaluator already imported
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["torch"] = torch.__version__
    return info
