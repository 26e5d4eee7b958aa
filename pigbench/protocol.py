"""The user-conditioned pairwise protocol: the typed objects every adapter and evaluator shares.

Normative definition: ``docs/protocol.md`` (from the project's protocol spec). In short::

    PreferenceRecord   one user's judgement on one prompt: 2+ images with ranks (1 = best, equal = tie)
    ReferencePair      (prompt, preferred, rejected), optionally carrying the full ranking it came from
    Target             (prompt, image A, image B, gold in {A, B, TIE}); evaluators never see ``gold``
    Episode            one user's references plus one target
    Prediction         A / B / TIE / INVALID, with optional scores, raw text, rationale and dimensions

Images are referenced lazily by :class:`ImageRef`: nothing reads or decodes pixels until an
evaluator asks for them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, Union

from PIL import Image, UnidentifiedImageError


class Label(str, Enum):
    """A gold label or a predicted label. ``INVALID`` only ever appears in predictions."""

    A = "A"
    B = "B"
    TIE = "TIE"
    INVALID = "INVALID"

    def swapped(self) -> "Label":
        """The same judgement with images A and B exchanged."""
        return {Label.A: Label.B, Label.B: Label.A}.get(self, self)


ImageSource = Union[str, Path, bytes, Callable[[], Union[bytes, Image.Image]]]


class ImageError(ValueError):
    """An image could not be read or decoded; the message names the image."""


IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG opens multi-picture (MPO) files too
"""What pigbench decodes (Pillow's format names): those of text-to-image datasets. Datasets are
untrusted input, so Pillow's other decoders (EPS, which Pillow renders with Ghostscript, say) are
never reached: such a file is an image that does not decode."""


def open_image(source: Union[str, Path, io.BytesIO]) -> Image.Image:
    """``Image.open(source)`` for :data:`IMAGE_FORMATS` only (lazy, as ``Image.open`` is); another
    format raises ``PIL.UnidentifiedImageError``."""
    return Image.open(source, formats=IMAGE_FORMATS)


def as_rgb(img: Image.Image, rgba_background: Optional[tuple[int, int, int]] = None) -> Image.Image:
    """``img`` (loaded) as RGB, as :meth:`ImageRef.open` gives it: an RGBA image laid over
    ``rgba_background`` when given, else Pillow's ``convert("RGB")``."""
    if rgba_background is not None and img.mode == "RGBA":
        flat = Image.new("RGB", img.size, rgba_background)
        flat.paste(img, mask=img.getchannel("A"))
        return flat
    return img.convert("RGB")


@dataclass(frozen=True, eq=False)
class ImageRef:
    """A lazily loaded image with a stable id and a content hash.

    ``source`` is a file path, the encoded bytes, or a zero-argument loader returning bytes or a
    PIL image. ``content_hash`` may be given when the producer knows it without reading pixels
    (e.g. a deterministic renderer hashes its parameters); otherwise it is the SHA-256 of the
    encoded bytes, computed on first access. Two refs are equal when their ids and hashes are.
    """

    id: str
    source: ImageSource = field(repr=False)
    known_hash: Optional[str] = field(default=None, repr=False)

    def read_bytes(self) -> bytes:
        """The encoded image bytes (a loader returning a PIL image is encoded as PNG, converted to
        RGB first when PNG cannot store its mode)."""
        src = self.source
        try:
            if isinstance(src, (bytes, bytearray)):
                return bytes(src)
            if isinstance(src, (str, Path)):
                return Path(src).read_bytes()
            out = src()
            if isinstance(out, Image.Image):
                buf = io.BytesIO()
                try:
                    out.save(buf, format="PNG")
                except OSError:  # a mode PNG cannot store (CMYK, YCbCr, LAB, HSV, F): its RGB, as open() gives it
                    buf = io.BytesIO()
                    out.convert("RGB").save(buf, format="PNG")
                return buf.getvalue()
            return bytes(out)
        except OSError as exc:
            raise ImageError(f"image {self.id!r}: cannot read {self._where()}: {exc}") from exc

    def open(self, rgba_background: Optional[tuple[int, int, int]] = None) -> Image.Image:
        """Decode to an RGB PIL image, fully loaded. Raises :class:`ImageError` naming the image.

        Pillow's ``convert("RGB")`` keeps the colours under transparent pixels, as the scalar
        rewards' recipes do; with ``rgba_background`` an RGBA image is laid over that colour
        instead (qwen-vl-utils lays it over white)."""
        src = self.source
        try:
            if callable(src) and not isinstance(src, (str, Path, bytes)):
                out = src()
                img = out if isinstance(out, Image.Image) else open_image(io.BytesIO(out))
            elif isinstance(src, (str, Path)):
                img = open_image(src)
            else:
                img = open_image(io.BytesIO(src))
            img.load()
            return as_rgb(img, rgba_background)
        except ImageError:
            raise
        except UnidentifiedImageError as exc:
            raise ImageError(f"image {self.id!r}: cannot decode {self._where()}: not an image in a format pigbench "
                             f"reads ({', '.join(IMAGE_FORMATS)}) or damaged") from exc
        except Exception as exc:  # PIL raises many types for corrupt files
            raise ImageError(f"image {self.id!r}: cannot decode {self._where()}: {exc}") from exc

    @property
    def content_hash(self) -> str:
        """SHA-256 hex digest identifying the image's content (cached after the first call)."""
        if self.known_hash is None:
            self.remember_hash(hashlib.sha256(self.read_bytes()).hexdigest())
        return self.known_hash  # type: ignore[return-value]

    def stamp(self) -> str:
        """What tells this image's content apart without decoding it, cheaply: the known hash, else
        the size of its file ("missing" if there is none), else the hash of its in-memory bytes;
        "" for a loader without a known hash. An image file written again with other pixels almost
        surely changes size; modification times are left out, as copies of a dataset differ in them."""
        src = self.source
        if self.known_hash is not None or isinstance(src, (bytes, bytearray)):
            return self.content_hash
        if isinstance(src, (str, Path)):
            try:
                return str(os.stat(src).st_size)
            except OSError:
                return "missing"
        return ""

    def remember_hash(self, digest: str) -> None:
        """Cache ``digest`` as :attr:`content_hash`: the SHA-256 of :meth:`read_bytes`, computed
        elsewhere (another process read the same file); a hash already known is kept."""
        if self.known_hash is None:
            object.__setattr__(self, "known_hash", digest)

    def _where(self) -> str:
        if isinstance(self.source, (str, Path)):
            return f"file {str(self.source)!r}"
        return "in-memory bytes" if isinstance(self.source, (bytes, bytearray)) else "loader"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageRef) and (self.id, self.content_hash) == (other.id, other.content_hash)

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(frozen=True)
class PreferenceRecord:
    """One user's judgement on one prompt, as an adapter reads it.

    ``ranks[i]`` is the rank of ``images[i]``: 1 is best, equal ranks are ties. A pairwise label
    is a ranking of two images ((1, 2), (2, 1) or (1, 1) for a tie).
    """

    record_id: str
    user_id: str
    prompt: str
    images: tuple[ImageRef, ...]
    ranks: tuple[int, ...]
    source: str = ""
    source_row: str = ""

    def __post_init__(self) -> None:
        if len(self.images) < 2:
            raise ValueError(f"record {self.record_id!r}: needs at least 2 images, has {len(self.images)}")
        if len(self.ranks) != len(self.images):
            raise ValueError(f"record {self.record_id!r}: {len(self.images)} images but {len(self.ranks)} ranks")


@dataclass(frozen=True)
class ReferencePair:
    """One of the user's past choices: ``preferred`` beat ``rejected`` on ``prompt``.

    A pair built from a ranking keeps it in ``ranking`` ((image, rank) with rank 1 best).
    """

    prompt: str
    preferred: ImageRef
    rejected: ImageRef
    record_id: str = ""
    ranking: tuple[tuple[ImageRef, int], ...] = ()

    def images(self) -> tuple[ImageRef, ...]:
        """Every image the pair shows: preferred, rejected, then the rest of its ranking (repeats kept)."""
        return (self.preferred, self.rejected, *(im for im, _ in self.ranking))


@dataclass(frozen=True)
class Target:
    """A pair to judge. ``gold`` is held by the harness; evaluators receive episodes without it."""

    sample_id: str
    prompt: str
    image_a: ImageRef
    image_b: ImageRef
    gold: Label
    record_id: str = ""


@dataclass(frozen=True)
class Episode:
    """One user's references plus one target: the unit an evaluator judges."""

    user_id: str
    references: tuple[ReferencePair, ...]
    target: Target

    @property
    def sample_id(self) -> str:
        return self.target.sample_id

    def without_gold(self) -> "Episode":
        """A copy whose target gold is INVALID, so an evaluator cannot read the answer."""
        return dataclasses.replace(self, target=dataclasses.replace(self.target, gold=Label.INVALID))

    def swapped(self) -> "Episode":
        """The same episode with images A and B exchanged (gold mapped accordingly)."""
        t = self.target
        return dataclasses.replace(
            self, target=dataclasses.replace(t, image_a=t.image_b, image_b=t.image_a, gold=t.gold.swapped())
        )


@dataclass(frozen=True)
class Dimension:
    """A user-specific evaluation dimension with each image's score on it."""

    name: str
    definition: str = ""
    score_a: Optional[float] = None
    score_b: Optional[float] = None


@dataclass
class Prediction:
    """An evaluator's answer for one episode.

    ``label`` is A, B, TIE or INVALID. Scalar evaluators fill ``score_a``/``score_b``; generative
    ones keep ``raw_text`` (and ``rationale``/``dimensions`` where their format has them).
    ``error`` says why a prediction is INVALID when it came from a failure rather than an answer.
    ``extra`` holds evaluator-specific JSON-serializable detail (e.g. both raw answers of a swap).
    """

    sample_id: str
    label: Label
    score_a: Optional[float] = None
    score_b: Optional[float] = None
    raw_text: Optional[str] = None
    rationale: Optional[str] = None
    dimensions: list[Dimension] = field(default_factory=list)
    error: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable dict without empty fields."""
        d: dict[str, Any] = {"sample_id": self.sample_id, "label": self.label.value}
        for name in ("score_a", "score_b", "raw_text", "rationale", "error"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        if self.dimensions:
            d["dimensions"] = [dataclasses.asdict(x) for x in self.dimensions]
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def invalid(cls, sample_id: str, error: str) -> "Prediction":
        return cls(sample_id=sample_id, label=Label.INVALID, error=error)

    def swapped(self) -> "Prediction":
        """The same answer with images A and B exchanged: label, scores and dimension scores."""
        return dataclasses.replace(
            self, label=self.label.swapped(), score_a=self.score_b, score_b=self.score_a,
            dimensions=[dataclasses.replace(d, score_a=d.score_b, score_b=d.score_a) for d in self.dimensions],
        )


def label_from_delta(delta: float, tau: float = 0.0) -> Label:
    """Protocol section 3: TIE if |delta| <= tau, else the side with the higher score; NaN is INVALID."""
    if delta != delta:  # NaN
        return Label.INVALID
    if abs(delta) <= tau:
        return Label.TIE
    return Label.A if delta > 0 else Label.B


def contradicts(label: Label, score_a: Optional[float], score_b: Optional[float]) -> bool:
    """Whether two scores favour another answer than ``label``: a TIE contradicts unequal scores, A
    or B the other side's higher score (tau plays no part); False when a score is missing or the
    label is INVALID."""
    if score_a is None or score_b is None or label == Label.INVALID:
        return False
    if label == Label.TIE:
        return score_a != score_b
    return score_a < score_b if label == Label.A else score_b < score_a


def combine_swapped(first: Label, second_mapped_back: Label) -> Label:
    """Position-swap rule: agreeing decisive answers win, disagreeing give TIE, one INVALID uses the other."""
    if first == Label.INVALID:
        return second_mapped_back
    if second_mapped_back == Label.INVALID:
        return first
    return first if first == second_mapped_back else Label.TIE


def normalize_prompt(prompt: str) -> str:
    """Lower-case and collapse whitespace: the key used for leakage checks and prompt grouping."""
    return " ".join(prompt.split()).lower()
