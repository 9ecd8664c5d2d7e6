"""Input features of one scored sample, from what the score job already holds (no model cost).

* Image (from its bytes, before they are purged): width, height, format, byte size, JPEG quality
  estimated from the quantisation tables, brightness mean and spread, colourfulness
  (Hasler-Süsstrunk), sharpness (variance of the Laplacian), aspect ratio. Pixel statistics are
  computed on a copy shrunk to at most ``_STATS_SIDE`` pixels a side (cheap for large images,
  the same for every sample so windows compare like with like).
* Prompt and answer: length in tokens (words and punctuation marks), a prompt template id (the
  prompt with quoted spans, numbers and content words masked, hashed), task or route.
* A vision embedding handed over by the scorer (the projector's output pooled over the image
  tokens of the pass it already runs), stored as a fixed random projection to
  ``EMBEDDING_STORE_DIMS`` float16 values; the drift test reduces it further with a PCA fitted on
  the reference.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any, Sequence

import numpy as np

__all__ = [
    "NUMERIC_FEATURES", "CATEGORICAL_FEATURES", "EMBEDDING_STORE_DIMS",
    "image_features", "text_features", "prompt_template", "template_id", "token_count",
    "pack_embedding", "unpack_embedding",
]

NUMERIC_FEATURES = (
    "width", "height", "aspect_ratio", "byte_size", "jpeg_quality", "brightness_mean", "brightness_std",
    "colourfulness", "sharpness", "prompt_tokens", "answer_tokens",
)
CATEGORICAL_FEATURES = ("format", "template", "task")
EMBEDDING_STORE_DIMS = 64
_STATS_SIDE = 256
_PROJECTION_SEED = 20260   # fixed: every sample of every model is projected the same way

# IJG standard luminance quantisation table (quality 50); any order, only its sum is used
_STD_LUMA_SUM = sum((
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
))

_TOKEN = re.compile(r"\w+|[^\w\s]")
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|‘[^’]*’|(?<!\w)'[^']*'(?!\w)")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# words kept in a template; every other word (objects, attributes, names) is masked
_FRAME_WORDS = frozenset("""
a an the this that these those there here it its is are was were be been am do does did can could
would should will shall may might must has have had what which who whom whose where when why how
many much any some no not yes or and but if of in on at to from with without by for about into
onto over under near behind above below between left right you your i me my we our they them their
he she his her image picture photo photograph photos images pictures scene shown show shows see
seen contain contains containing present visible describe answer question please tell count
number colour color kind type word one single only just
""".split())


def token_count(text: str) -> int:
    """Tokens as words and punctuation marks (model-independent, so models compare alike)."""
    return len(_TOKEN.findall(text or ""))


def prompt_template(prompt: str) -> str:
    """The prompt's frame: quoted spans, numbers and content words masked, runs of masks merged."""
    text = _NUMBER.sub(" <n> ", _QUOTED.sub(" <q> ", (prompt or "").lower()))
    out: list[str] = []
    for tok in re.findall(r"<[nq]>|\w+|[^\w\s]", text):
        if tok in ("<n>", "<q>") or tok in _FRAME_WORDS or not tok[0].isalnum():
            out.append(tok)
        elif not out or out[-1] != "<w>":
            out.append("<w>")
    return " ".join(out)


def template_id(prompt: str) -> str:
    """Hash (12 hex digits) of :func:`prompt_template`."""
    return hashlib.sha256(prompt_template(prompt).encode()).hexdigest()[:12]


def _jpeg_quality(im: Any) -> float | None:
    """IJG quality (1..100) whose scaled standard table best matches the luminance table."""
    tables = getattr(im, "quantization", None)
    if not tables or 0 not in tables:
        return None
    scale = 100.0 * float(sum(tables[0])) / _STD_LUMA_SUM
    q = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(min(100.0, max(1.0, q)))


def _laplacian_var(gray: np.ndarray) -> float:
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = (gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1])
    return float(lap.var())


def image_features(data: bytes) -> dict[str, Any]:
    """Features of an image given as bytes; raises ``ValueError`` when they are not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "unknown").lower()
            width, height = im.size
            quality = _jpeg_quality(im) if fmt == "jpeg" else None
            if fmt == "jpeg":
                im.draft("RGB", (_STATS_SIDE, _STATS_SIDE))
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image bytes are not a readable image: {e}") from None
    rgb.thumbnail((_STATS_SIDE, _STATS_SIDE))
    px = np.asarray(rgb, dtype=np.float32)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    gray = 0.299 * r + 0.587 * g + 0.114 * b
    rg, yb = r - g, 0.5 * (r + g) - b
    colourful = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    return {
        "width": int(width), "height": int(height), "aspect_ratio": float(width) / float(max(1, height)),
        "byte_size": len(data), "format": fmt, "jpeg_quality": quality,
        "brightness_mean": float(gray.mean()), "brightness_std": float(gray.std()),
        "colourfulness": colourful, "sharpness": _laplacian_var(gray),
    }


def text_features(prompt: str, answer: str, route: str, meta: dict[str, Any] | None) -> dict[str, Any]:
    """Prompt/answer lengths, template id, and task (``meta.task`` when the sample carries one, else the route)."""
    task = (meta or {}).get("task")
    return {
        "prompt_tokens": token_count(prompt), "answer_tokens": token_count(answer),
        "template": template_id(prompt), "task": str(task) if task else (route or "unknown"),
    }


_projections: dict[int, np.ndarray] = {}


def _projection(dim: int) -> np.ndarray:
    if dim not in _projections:
        rng = np.random.default_rng(_PROJECTION_SEED + dim)
        _projections[dim] = (rng.standard_normal((dim, EMBEDDING_STORE_DIMS)) / np.sqrt(EMBEDDING_STORE_DIMS)).astype(np.float32)
    return _projections[dim]


def pack_embedding(vec: Sequence[float] | np.ndarray) -> bytes:
    """A pooled vision embedding as ``EMBEDDING_STORE_DIMS`` float16 values (a fixed random projection)."""
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("vision embedding is empty or not finite")
    return (v @ _projection(v.size)).astype(np.float16).tobytes()


def unpack_embedding(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float16).astype(np.float32)
