"""Data-parallel runs: ``python -m pigbench.run`` launched N times by ``torchrun`` or ``accelerate launch``.

The launcher starts one process per GPU and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without
them (or with ``WORLD_SIZE=1``) a run is one process and nothing here imports torch. With them:

* **Sharding by user.** Every rank builds the same split and the same list of episodes still to do,
  then takes the users that :func:`assign_users` gives it: all of a user's episodes go to one rank
  (so a user's cached context is built once, on that rank), users balanced by an estimated cost
  (references + remaining targets) with the greedy longest-processing-time rule. No data is sent.
* **Stores per rank.** Rank 0 writes ``<run_key>.sqlite``, the store a one-process run uses; rank
  r > 0 writes ``<run_key>.rank<r>.sqlite``. Every rank reads all of them before starting, so a run
  resumed with another number of ranks (1 included) skips every prediction any earlier run stored.
  When a run completes, rank 0 moves the other files' predictions into ``<run_key>.sqlite`` and
  deletes them. The run key never contains the world size.
* **Agreeing ranks.** Ranks talk through a gloo process group (small Python objects on the CPU, also
  for GPU runs: no NCCL communicator, no GPU memory, no NCCL watchdog), with a long timeout
  (``PIGBENCH_DIST_TIMEOUT`` seconds, default 24 h) because ranks wait for the slowest one. An error
  on one rank is raised on every rank (:meth:`World.together`) instead of leaving the others waiting.
* **Devices.** ``--device cuda`` becomes ``cuda:<LOCAL_RANK>`` on each rank; an explicit ``cuda:K``
  is kept.
"""

from __future__ import annotations

import contextlib
import glob
import heapq
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from pigbench.evaluator import RequirementError
from pigbench.protocol import Episode
from pigbench.store import PredictionStore, StoreError

DEFAULT_TIMEOUT_S = 24 * 3600


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run: ``rank`` of ``size``, ``local_rank`` on its host."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "World":
        """From the variables torchrun and ``accelerate launch`` set; one process when they are absent."""
        try:
            size = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError as exc:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from None
        if size < 1 or not 0 <= rank < size or local_rank < 0:
            raise ValueError(f"inconsistent launcher variables: RANK={rank}, WORLD_SIZE={size}, "
                             f"LOCAL_RANK={local_rank}")
        return cls(rank, size, local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def bind_device(self, device: str) -> str:
        """The device this rank runs on: in a multi-rank run, bare ``cuda`` becomes ``cuda:<local_rank>``,
        also made the current CUDA device (so code that says just "cuda" lands there too)."""
        if self.size == 1 or device != "cuda":
            return device
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
        return f"cuda:{self.local_rank}"

    # collectives (no-ops in a one-process run) ---------------------------------------------------
    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, by rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def together(self, peer_error: type[Exception]) -> Iterator[None]:
        """Run the block on every rank, then synchronise: if it raised on this rank, re-raise it; if it
        raised on another rank, raise ``peer_error`` naming that rank and the error."""
        error: Optional[Exception] = None
        try:
            yield
        except Exception as exc:
            error = exc
        reports = self.all_gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        for rank, report in enumerate(reports):
            if report is not None:
                raise peer_error(f"rank {rank} of {self.size} stopped: {report}")


@contextlib.contextmanager
def launched_world(env: Mapping[str, str] = os.environ) -> Iterator[World]:
    """The :class:`World` of this process, with its process group set up for the block (and torn down
    after, unless the caller had set one up already). A launch of several ranks without torch is a
    :class:`RequirementError` naming the extra to install."""
    world = World.from_env(env)
    if world.size == 1:
        yield world
        return
    try:
        import torch.distributed as dist
    except ImportError:
        raise RequirementError(f"WORLD_SIZE={world.size} (a data-parallel launch) needs PyTorch: "
                           "pip install 'pigbench[models]'") from None
    own = not dist.is_initialized()
    if own:
        try:
            timeout = float(env.get("PIGBENCH_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise ValueError(f"PIGBENCH_DIST_TIMEOUT must be a positive number of seconds, "
                             f"got {env['PIGBENCH_DIST_TIMEOUT']!r}")
        dist.init_process_group("gloo", rank=world.rank, world_size=world.size, timeout=timedelta(seconds=timeout))
    elif dist.get_world_size() != world.size or dist.get_rank() != world.rank:
        raise RuntimeError(f"the existing process group (rank {dist.get_rank()} of {dist.get_world_size()}) "
                           f"disagrees with RANK={world.rank}, WORLD_SIZE={world.size}")
    try:
        yield world
    finally:
        if own:
            dist.destroy_process_group()


# sharding ------------------------------------------------------------------------------------------
def user_costs(episodes: Sequence[Episode]) -> dict[str, int]:
    """Estimated work per user: its reference pairs (context built once per user) plus its targets."""
    costs: dict[str, int] = defaultdict(int)
    for e in episodes:
        if e.user_id not in costs:
            costs[e.user_id] = len(e.references)
        costs[e.user_id] += 1
    return dict(costs)


def assign_users(costs: Mapping[str, float], ranks: int) -> dict[str, int]:
    """User -> rank by longest processing time first: users by decreasing cost (then id), each to the
    rank with the least cost so far (then the lowest rank). Deterministic, so every rank agrees."""
    loads = [(0.0, r) for r in range(ranks)]
    out = {}
    for user in sorted(costs, key=lambda u: (-costs[u], u)):
        load, rank = heapq.heappop(loads)
        out[user] = rank
        heapq.heappush(loads, (load + costs[user], rank))
    return out


def shard(episodes: Sequence[Episode], world: World) -> list[Episode]:
    """The episodes of this rank's users, in their original order (all of them in a one-process run)."""
    if world.size == 1:
        return list(episodes)
    owner = assign_users(user_costs(episodes), world.size)
    return [e for e in episodes if owner[e.user_id] == world.rank]


# stores --------------------------------------------------------------------------------------------
class RunStores:
    """The prediction stores of one run key in ``directory``: this rank's own, and all ranks' (see the
    module docstring). ``<key>.sqlite`` is the store of rank 0 and of one-process runs."""

    def __init__(self, directory: Path, key: str, world: World) -> None:
        self.directory = Path(directory)
        self.key = key
        self.world = world
        self.main_path = self.directory / f"{key}.sqlite"
        self.own_path = self.main_path if world.is_main else self.directory / f"{key}.rank{world.rank}.sqlite"

    def rank_paths(self) -> list[Path]:
        """Stores left by ranks > 0 of this or earlier runs, whatever their world size."""
        pattern = glob.escape(str(self.directory / self.key)) + ".rank*.sqlite"
        return sorted(Path(p) for p in glob.glob(pattern))

    def done_ids(self) -> set[str]:
        """Sample ids successfully predicted by any rank of any run of this key (failed predictions are
        predicted again; see :mod:`pigbench.store`). Returns on every rank together, before
        any rank writes, so all ranks see the same set; raises on every rank if ranks disagree on the
        run key (other options or data on some rank) or on what is done. Rank 0 first moves earlier
        runs' rank stores into ``<key>.sqlite``, so the rank stores hold only this run's predictions
        and :meth:`merge` lets a sample's new failure replace its old one, never the reverse."""
        done: set[str] = set()
        paths = [self.main_path, *self.rank_paths()]  # the same on every rank: nothing moves them before the gather
        for path in paths:
            if path.exists():
                with PredictionStore(path, self.key) as store:
                    done |= store.done_ids()
        views = self.world.all_gather((self.key, len(done)))
        if len(set(views)) > 1:
            raise ValueError("ranks disagree on the run (run key, predictions found): " +
                               ", ".join(f"rank {r}: {v}" for r, v in enumerate(views)))
        if len(paths) > 1:
            with self.world.together(StoreError):
                if self.world.is_main:
                    self._absorb_rank_stores()
        return done

    def open_own(self) -> PredictionStore:
        return PredictionStore(self.own_path, self.key)

    def merge(self) -> dict[str, dict]:
        """Rank 0 only, once every rank has closed its store: move the rank stores' predictions into
        ``<key>.sqlite``, delete those files, and return all predictions by sample id."""
        self._absorb_rank_stores()
        with PredictionStore(self.main_path, self.key) as main:
            return main.load()

    def _absorb_rank_stores(self) -> None:
        """Move the rank stores' predictions into ``<key>.sqlite`` and delete those files."""
        with PredictionStore(self.main_path, self.key) as main:
            for path in self.rank_paths():
                main.absorb(path)
                for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                    leftover.unlink(missing_ok=True)
