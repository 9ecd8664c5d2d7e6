"""``VLMAdapter``: one loaded VLM behind the API in docs/CONTRACTS.md ("Model adapter API")."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from monitor.adapter.encoding import Encoded, collate, encode
from monitor.adapter.families import FamilySpec, decoder_layers, image_token_id
from monitor.adapter.forward import ForwardOutput, check_layer_request, run_forward
from monitor.adapter.generation import Generation, run_generate
from monitor.adapter.loading import fingerprint_folder, load_parts, resolve_device, resolve_dtype

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["VLMAdapter", "load_vlm", "DEFAULT_ANSWER_WORDS"]

log = logging.getLogger(__name__)

# Words whose first-token probability forward(logits=True) reports by default (POPE answers).
DEFAULT_ANSWER_WORDS = ("yes", "no")


class VLMAdapter:
    """A loaded HF VLM: encode inputs, batched stoppable forward passes, generation."""

    def __init__(self, path: Path, spec: FamilySpec, model: Any, processor: Any,
                 answer_words: Sequence[str] = DEFAULT_ANSWER_WORDS) -> None:
        self.path = path
        self.spec = spec
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.family = spec.family
        self.num_layers = len(decoder_layers(model))
        self.image_token_id = image_token_id(model.config)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))
        self.answer_words = tuple(answer_words)
        self._first_ids_cache: dict[tuple[str, ...], dict[str, list[int]]] = {}
        # generate() reseeds the global RNG; one caller at a time keeps seeded sampling reproducible
        self.lock = threading.RLock()

    def __repr__(self) -> str:
        return f"VLMAdapter({self.family}, {self.path}, layers={self.num_layers}, {self.device}, {self.dtype})"

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 hex of config + weight files (computed on first use: it reads every weight byte)."""
        return fingerprint_folder(self.path)

    def first_token_ids(self, words: Sequence[str]) -> dict[str, list[int]]:
        """word -> distinct first-token ids of its spellings (as is, Capitalised, UPPER), unk excluded."""
        key = tuple(words)
        if key in self._first_ids_cache:
            return self._first_ids_cache[key]
        unk = self.tokenizer.unk_token_id
        result: dict[str, list[int]] = {}
        for word in words:
            ids: list[int] = []
            for variant in dict.fromkeys((word, word.capitalize(), word.upper())):
                toks = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
                if toks and toks[0] != unk and toks[0] not in ids:
                    ids.append(int(toks[0]))
            if not ids:
                raise ValueError(f"answer word {word!r} has no token in this model's vocabulary")
            result[word] = ids
        self._first_ids_cache[key] = result
        return result

    def encode(self, image: Image.Image | None, prompt: str, answer: str | None = None) -> Encoded:
        """Inputs for (image, prompt, answer) with the model's own chat template / prompt format."""
        return encode(self.spec, self.processor, image, prompt, answer, image_token=self.image_token_id)

    def forward(
        self,
        encs: Sequence[Encoded],
        layers: Sequence[int],
        stop_at: int | None = None,
        attentions: bool = False,
        logits: bool = False,
        positions: Sequence[Sequence[int]] | None = None,
        answer_words: Sequence[str] | None = None,
        image_embedding: bool = False,
    ) -> ForwardOutput:
        """One batched pass; see docs/CONTRACTS.md for the layer numbering and the outputs.

        ``positions`` (per sample) keeps only those token positions of each hidden state;
        ``answer_words`` overrides the words reported in ``first_token_probs``;
        ``image_embedding``: also the projector's output pooled over each sample's image tokens.
        """
        encs = list(encs)
        last = check_layer_request(self.num_layers, list(layers), stop_at, attentions, logits)
        if positions is not None and len(positions) != len(encs):
            raise ValueError(f"positions has {len(positions)} entries for {len(encs)} samples")
        first_ids = self.first_token_ids(answer_words or self.answer_words) if logits else {}
        batch = collate(self.spec, encs, self.pad_id, self.device, self.dtype)
        with self.lock:
            return run_forward(self.model, batch, encs, list(layers), last, attentions, logits, first_ids, positions,
                               image_embedding=image_embedding)

    def generate_detailed(
        self,
        image: Image.Image | None,
        prompt: str,
        max_new_tokens: int = 8,
        temperature: float = 0.0,
        top_p: float = 1.0,
        n: int = 1,
        top_logprobs: int = 0,
        seed: int | None = None,
    ) -> tuple[list[Generation], int]:
        """``n`` answers with token log-probs, and the prompt's token count (for ``usage``)."""
        import torch

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        enc = self.encode(image, prompt)
        batch = collate(self.spec, [enc], self.pad_id, self.device, self.dtype)
        with self.lock:
            if seed is not None:
                torch.manual_seed(seed)
            outs: list[Generation] = []
            for i in range(n):
                if temperature == 0 and outs:  # greedy answers are all the same
                    outs.append(outs[0])
                    continue
                outs.append(
                    run_generate(self.model, self.tokenizer, batch, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_p=top_p, top_logprobs=top_logprobs, pad_id=self.pad_id)
                )
        return outs, enc.length

    def generate(self, image: Image.Image | None, prompt: str, max_new_tokens: int = 8, temperature: float = 0.0) -> str:
        """The answer text; greedy when ``temperature == 0``."""
        gens, _ = self.generate_detailed(image, prompt, max_new_tokens=max_new_tokens, temperature=temperature)
        return gens[0].text


def load_vlm(
    path: str | Path,
    device: str = "auto",
    dtype: Any = "auto",
    attn_implementation: str | None = "eager",
    answer_words: Sequence[str] = DEFAULT_ANSWER_WORDS,
) -> VLMAdapter:
    """Load a local LLaVA, PaliGemma or Qwen2-VL folder offline.

    ``attn_implementation="eager"`` (default) makes attention maps available; pass ``"sdpa"``
    (or None for the checkpoint's choice) where speed matters more than attention maps.
    """
    p = Path(path).expanduser().resolve()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    spec, model, processor = load_parts(p, dev, dt, attn_implementation)
    return VLMAdapter(p, spec, model, processor, answer_words=answer_words)
