"""Answer equivalence by a local sentence-embedding model (sentence-transformers folder layout).

An operator whose answers are free text no task judge knows (``spotcheck.equivalence.kind:
embedding``) points the spot checks at a sentence-embedding model folder saved in the
sentence-transformers layout::

    modules.json                  # [Transformer, Pooling, (Normalize)]
    config.json + model.safetensors (or pytorch_model.bin, or a sharded index)
    tokenizer.json (or vocab.txt / vocab.json + merges.txt / a SentencePiece model), tokenizer_config.json
    sentence_bert_config.json     # optional: max_seq_length, do_lower_case
    1_Pooling/config.json         # pooling_mode_cls_token / _mean_tokens / _max_tokens / _mean_sqrt_len_tokens
    2_Normalize/                  # optional

It is read with ``transformers`` (``AutoModel`` / ``AutoTokenizer``, ``local_files_only=True``, no
remote code): nothing is downloaded and sentence-transformers is not needed. :func:`check_layout`
checks the folder without loading anything (the config validator runs it, so a bad folder stops
``vlmwatch daemon`` at start); :func:`load_embedding_equivalence` loads it once per process.

Grouping (:meth:`EmbeddingEquivalence.grouping`): answers are taken in order (the served answer
first, then the K samples). A bare "yes"/"no" (or an answer that starts with one, as
:func:`~monitor.spotcheck.answers.content_words` reads it) keeps that key and the empty answer the
key ``""``, without the model; answers with one normalised text share a group; any other answer
joins the existing group whose *first member* it is most similar to, when that cosine similarity
is >= ``threshold``, else it starts a new group. A group's key is its first member's content words
(:func:`~monitor.spotcheck.answers.content_words`, the default equivalence's key, suffixed
``" #2"``, ``" #3"`` ... should two groups' first members share their content words), so stored
``groups`` / ``majority_answer`` read like the default's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.spotcheck.answers import content_words, normalize_answer

__all__ = [
    "EmbeddingModelError",
    "EmbeddingLayout",
    "check_layout",
    "SentenceEmbedder",
    "EmbeddingEquivalence",
    "load_embedding_equivalence",
    "POOLING_MODES",
]

TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
# sentence-transformers' concatenation order when several modes are on
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len")
_UNSUPPORTED_POOLING = ("weightedmean", "lasttoken")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


class EmbeddingModelError(ValueError):
    """The embedding model folder cannot be used; the message names the path and what is wrong."""


@dataclass(frozen=True)
class EmbeddingLayout:
    root: Path
    transformer_dir: Path
    pooling: tuple[str, ...]  # subset of POOLING_MODES, in concatenation order
    normalize: bool
    max_seq_length: int | None
    do_lower_case: bool


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise EmbeddingModelError(f"embedding model {path.parent}: missing {path.name} ({what})")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EmbeddingModelError(f"embedding model {path.parent}: {path.name} is not readable JSON: {e}") from None


def _pooling_modes(path: Path) -> tuple[str, ...]:
    cfg = _read_json(path / "config.json", "the Pooling module's config")
    if not isinstance(cfg, dict):
        raise EmbeddingModelError(f"embedding model {path}: config.json must be a JSON object")
    on: set[str] = set()
    mode = cfg.get("pooling_mode")  # a single name, as some exporters write it
    if isinstance(mode, str):
        on.add({"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max"}.get(mode, mode))
    for key, value in cfg.items():
        if key.startswith("pooling_mode_") and value:
            on.add({"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max", "mean_sqrt_len_tokens": "mean_sqrt_len",
                    "weightedmean_tokens": "weightedmean"}.get(key[len("pooling_mode_"):], key[len("pooling_mode_"):]))  # fmt: skip
    bad = sorted(on - set(POOLING_MODES))
    if bad:
        raise EmbeddingModelError(f"embedding model {path}: unsupported pooling mode(s) {bad}; supported: "
                                  f"{', '.join(POOLING_MODES)}")  # fmt: skip
    if not on:
        raise EmbeddingModelError(f"embedding model {path}/config.json: no pooling mode is on "
                                  f"(pooling_mode_mean_tokens, _cls_token, _max_tokens or _mean_sqrt_len_tokens)")  # fmt: skip
    return tuple(m for m in POOLING_MODES if m in on)


def check_layout(path: str | Path) -> EmbeddingLayout:
    """Check a sentence-transformers folder without loading it; :class:`EmbeddingModelError` names
    the path and the missing or unsupported part."""
    root = Path(path).expanduser()
    if not str(path).strip():
        raise EmbeddingModelError("embedding model path is empty")
    if not root.is_dir():
        raise EmbeddingModelError(f"embedding model {root}: not a folder")
    modules = _read_json(root / "modules.json", "the sentence-transformers module list")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, dict) for m in modules):
        raise EmbeddingModelError(f"embedding model {root}: modules.json must be a non-empty list of modules")
    try:
        modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    except (TypeError, ValueError):
        raise EmbeddingModelError(f"embedding model {root}: modules.json has a module whose idx is not a number") from None
    types = [str(m.get("type", "")) for m in modules]
    if types[0] != TRANSFORMER:
        raise EmbeddingModelError(f"embedding model {root}: the first module in modules.json must be {TRANSFORMER}, "
                                  f"got {types[0]!r}")  # fmt: skip
    if len(types) < 2 or types[1] != POOLING:
        raise EmbeddingModelError(f"embedding model {root}: modules.json needs a {POOLING} module after the Transformer")
    extra = types[2:]
    if extra not in ([], [NORMALIZE]):
        raise EmbeddingModelError(f"embedding model {root}: unsupported module(s) {[t for t in extra if t != NORMALIZE]} "
                                  f"in modules.json (supported: Transformer, Pooling, Normalize)")  # fmt: skip
    tdir = root / str(modules[0].get("path", "") or "")
    pdir = root / str(modules[1].get("path", "") or "1_Pooling")
    if not tdir.is_dir():
        raise EmbeddingModelError(f"embedding model {root}: Transformer module folder {tdir} is missing")
    cfg = _read_json(tdir / "config.json", "the transformer's config")
    if not isinstance(cfg, dict) or not cfg.get("model_type"):
        raise EmbeddingModelError(f"embedding model {tdir}: config.json has no model_type")
    if not any((tdir / w).is_file() for w in _WEIGHTS):
        raise EmbeddingModelError(f"embedding model {tdir}: missing model weights (one of {', '.join(_WEIGHTS)})")
    if not (any((tdir / t).is_file() for t in _TOKENIZER_FILES)
            or ((tdir / "vocab.json").is_file() and (tdir / "merges.txt").is_file())):  # fmt: skip
        raise EmbeddingModelError(f"embedding model {tdir}: missing tokenizer files (one of {', '.join(_TOKENIZER_FILES)}, "
                                  f"or vocab.json + merges.txt)")  # fmt: skip
    if not pdir.is_dir():
        raise EmbeddingModelError(f"embedding model {root}: Pooling module folder {pdir} is missing")
    pooling = _pooling_modes(pdir)
    sbert: dict[str, Any] = {}
    if (tdir / "sentence_bert_config.json").is_file():
        sbert = _read_json(tdir / "sentence_bert_config.json", "max_seq_length") or {}
        if not isinstance(sbert, dict):
            raise EmbeddingModelError(f"embedding model {tdir}: sentence_bert_config.json must be a JSON object")
    max_len = sbert.get("max_seq_length")
    if max_len is not None and (not isinstance(max_len, int) or max_len <= 0):
        raise EmbeddingModelError(f"embedding model {tdir}: sentence_bert_config.json max_seq_length must be a "
                                  f"positive integer, got {max_len!r}")  # fmt: skip
    return EmbeddingLayout(root=root, transformer_dir=tdir, pooling=pooling, normalize=NORMALIZE in extra,
                           max_seq_length=int(max_len) if max_len else None,
                           do_lower_case=bool(sbert.get("do_lower_case", False)))  # fmt: skip


class SentenceEmbedder:
    """A sentence-transformers folder loaded with ``transformers`` on the CPU, offline."""

    def __init__(self, path: str | Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.layout = check_layout(path)
        tdir = str(self.layout.transformer_dir)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tdir, local_files_only=True, trust_remote_code=False)
            self.model = AutoModel.from_pretrained(tdir, local_files_only=True, trust_remote_code=False,
                                                   dtype=torch.float32).eval()  # fmt: skip
        except Exception as e:
            raise EmbeddingModelError(f"embedding model {tdir}: cannot load: {type(e).__name__}: {e}") from e
        limit = self.layout.max_seq_length or getattr(self.tokenizer, "model_max_length", 512) or 512
        self.max_length = int(min(limit, 512, getattr(self.model.config, "max_position_embeddings", 512) or 512))
        self.lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Any:
        """``float32 [len(texts), dim]`` sentence embeddings (unit length when the folder has Normalize)."""
        import torch

        texts = [t.lower() if self.layout.do_lower_case else t for t in texts]
        if not texts:
            raise ValueError("no texts to embed")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")  # fmt: skip
        if "token_type_ids" in enc and "token_type_ids" not in self._forward_args():
            enc.pop("token_type_ids")
        with self.lock, torch.inference_mode():
            tokens = self.model(**enc).last_hidden_state.float()  # [n, T, d]
        mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        parts = []
        for mode in self.layout.pooling:
            if mode == "cls":
                parts.append(tokens[:, 0])
            elif mode == "max":
                parts.append(tokens.masked_fill(mask == 0, -1e9).max(dim=1).values)
            else:
                total, count = (tokens * mask).sum(dim=1), mask.sum(dim=1).clamp(min=1e-9)
                parts.append(total / count if mode == "mean" else total / count.sqrt())
        out = torch.cat(parts, dim=-1)
        if self.layout.normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return out

    def _forward_args(self) -> set[str]:
        import inspect

        return set(inspect.signature(self.model.forward).parameters)


class EmbeddingEquivalence:
    """Groups answers by cosine similarity of their embeddings to each group's first member."""

    def __init__(self, embedder: SentenceEmbedder, threshold: float = 0.85) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
        self.embedder = embedder
        self.threshold = float(threshold)
        self.last_seconds = 0.0  # wall time of the latest grouping's embedding pass

    def grouping(self, answers: Sequence[str]) -> Callable[[str], str]:
        """The key of each of ``answers`` (served answer first): a callable usable as the ``key`` of
        :func:`~monitor.spotcheck.answers.group_stats`. An answer not among ``answers`` raises KeyError."""
        import torch

        keys: dict[str, str] = {}  # answer -> group key
        by_norm: dict[str, str | None] = {}  # normalised text -> group key (None: decided by the embedding pass)
        to_embed: list[str] = []
        for a in answers:
            if a in keys:
                continue
            cw, norm = content_words(a), normalize_answer(a)
            if cw in ("yes", "no") or not norm:
                keys[a] = cw if norm else ""
            elif norm not in by_norm:
                by_norm[norm] = None
                to_embed.append(a)
        self.last_seconds = 0.0
        if to_embed:
            t0 = time.perf_counter()
            emb = torch.nn.functional.normalize(self.embedder.embed(to_embed).double(), dim=-1)
            self.last_seconds = time.perf_counter() - t0
            leaders: list[int] = []
            leader_keys: list[str] = []
            used: set[str] = set(keys.values())
            for i, a in enumerate(to_embed):
                key = None
                if leaders:
                    sims = emb[leaders] @ emb[i]
                    j = int(torch.argmax(sims))
                    if float(sims[j]) >= self.threshold - 1e-9:
                        key = leader_keys[j]
                if key is None:
                    base = key = content_words(a)
                    n = 1
                    while key in used:
                        n += 1
                        key = f"{base} #{n}"
                    used.add(key)
                    leaders.append(i)
                    leader_keys.append(key)
                keys[a] = key
                by_norm[normalize_answer(a)] = key
        for a in answers:
            if a not in keys:  # an answer whose normalised text an earlier one had
                keys[a] = by_norm[normalize_answer(a)] or ""
        return keys.__getitem__


_CACHE: dict[tuple[str, float], EmbeddingEquivalence] = {}
_CACHE_LOCK = threading.Lock()


def load_embedding_equivalence(path: str | Path, threshold: float = 0.85) -> EmbeddingEquivalence:
    """The folder's equivalence, loaded once per process (per resolved path and threshold)."""
    key = (str(Path(path).expanduser().resolve()), float(threshold))
    with _CACHE_LOCK:
        eq = _CACHE.get(key)
        if eq is None:
            same_model = next((e.embedder for (p, _), e in _CACHE.items() if p == key[0]), None)
            eq = _CACHE[key] = EmbeddingEquivalence(same_model or SentenceEmbedder(path), threshold)
        return eq
