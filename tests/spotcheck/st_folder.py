"""A tiny sentence-transformers folder built offline for the embedding-equivalence tests.

A one-layer BertModel and a lower-casing WordLevel tokenizer (punctuation split off), saved in the
sentence-transformers layout. ``semantic=True`` sets the weights so the model's embeddings mean
something: the attention and feed-forward output projections are zero (each layer passes its input
through, LayerNorm aside), position and token-type embeddings are zero, and each word's embedding
is a chosen zero-mean direction (rows of a Hadamard matrix, so LayerNorm keeps them as they are):
synonyms share a direction, other content words are orthogonal, function words, punctuation and
the special tokens are the zero vector (they drop out of a mean up to its length). So a mean-pooled
answer points along the sum of its content words' directions: "a red circle" and "A crimson ring."
have cosine 1, "a red circle" and "a blue star" cosine 0, "a red circle" and "a red circle and a
blue star" 1/sqrt(2).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FUNCTION = ["a", "an", "the", "and", "there", "is", "are", "of", "with", ".", ",", "!", "?"]
# word -> direction index (synonyms share one)
CONTENT = {"red": 1, "crimson": 1, "circle": 2, "ring": 2, "blue": 3, "star": 4, "green": 5, "square": 6,
           "cat": 7, "dog": 8, "two": 9, "three": 10, "yellow": 11, "triangle": 12, "small": 13, "large": 14}
HIDDEN = 16


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def build_st_folder(root: Path, *, pooling: str = "mean", normalize: bool = True, semantic: bool = False,
                    seed: int = 0, extra_words: tuple[str, ...] = ()) -> Path:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = SPECIAL + FUNCTION + list(CONTENT) + [w for w in extra_words if w not in CONTENT and w not in FUNCTION]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )  # fmt: skip
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)  # fmt: skip
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, pad_token_id=vocab["[PAD]"])  # fmt: skip
    model = BertModel(cfg).eval()
    if semantic:
        dirs = _hadamard(HIDDEN)  # rows 1.. are zero-mean and orthogonal
        with torch.no_grad():
            emb = model.embeddings
            emb.word_embeddings.weight.zero_()
            for w, d in CONTENT.items():
                emb.word_embeddings.weight[vocab[w]] = dirs[d]
            emb.position_embeddings.weight.zero_()
            emb.token_type_embeddings.weight.zero_()
            for layer in model.encoder.layer:
                for lin in (layer.attention.output.dense, layer.output.dense):
                    lin.weight.zero_()
                    lin.bias.zero_()
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root)
    fast.save_pretrained(root)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (root / "2_Normalize").mkdir(exist_ok=True)
    (root / "modules.json").write_text(json.dumps(modules, indent=2))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    (root / "1_Pooling").mkdir(exist_ok=True)
    flags = {f"pooling_mode_{m}": m == pooling for m in ("cls_token", "mean_tokens", "max_tokens",
                                                         "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")}
    key = {"mean": "mean_tokens", "cls": "cls_token", "max": "max_tokens"}.get(pooling, pooling)
    flags[f"pooling_mode_{key}"] = True
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": HIDDEN, **flags}))
    return root
