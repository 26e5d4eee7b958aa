"""Pixel helpers for the weight-free image evaluators: decode and resize, and a per-image cache.

``load_rgb`` turns an :class:`ImageRef` into a uint8 array; :class:`PerImageCache` keeps one
computed value per image content (keyed by content hash), so a user's reference images are
decoded once per evaluator instance, not once per target.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Optional, TypeVar

import numpy as np
from PIL import Image

from pigbench.protocol import ImageRef

V = TypeVar("V")
MAX_SIDE = 4096  # the largest square side an evaluator's ``size`` option may ask for


def check_side(evaluator: str, size: int, minimum: int) -> None:
    """Raise ValueError unless ``minimum <= size <= MAX_SIDE`` (``size``: a ``size`` option, the
    side of the squares images are resized to)."""
    if not minimum <= size <= MAX_SIDE:
        raise ValueError(f"{evaluator}: size must be between {minimum} and {MAX_SIDE}, got {size}")


def load_rgb(image: ImageRef, size: Optional[int] = None) -> np.ndarray:
    """``image`` as an RGB uint8 array (H, W, 3), resized to ``size`` x ``size`` (bicubic) if given.

    Raises :class:`pigbench.protocol.ImageError` naming the image when it cannot be decoded.
    """
    img = image.open()
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


class PerImageCache(Generic[V]):
    """``compute(image)`` memoized by the image's content hash; least recently used entries go first.

    Failures are not cached: a broken image raises again on each access, naming itself.
    """

    def __init__(self, compute: Callable[[ImageRef], V], max_items: int = 4096) -> None:
        self._compute = compute
        self._max_items = max_items
        self._items: OrderedDict[str, V] = OrderedDict()

    def __call__(self, image: ImageRef) -> V:
        key = image.content_hash
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._compute(image)
        self._items[key] = value
        if len(self._items) > self._max_items:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
