"""Tiny real transformers models for the sampler tests (random weights, built from a config)."""

from __future__ import annotations

import pytest
import torch


def tiny_llama(vocab: int = 8, init: float = 0.2, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        initializer_range=init, bos_token_id=0, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def llama():
    # init 0.5 makes the next-token distribution far from uniform, so distribution tests have power
    return tiny_llama(init=0.5)


@pytest.fixture(scope="session")
def llava():
    """The shipped tiny LLaVA fixture (real processor, CLIP vision tower, Llama text) and one prompt."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from monitor.fixtures.registry import fixture_dir

    d = fixture_dir("tiny-llava")
    proc = AutoProcessor.from_pretrained(d)
    model = AutoModelForImageTextToText.from_pretrained(d, attn_implementation="eager").eval()
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "is there a cat?"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inp = dict(proc(images=img, text=text, return_tensors="pt"))
    ids = inp.pop("input_ids")
    return model, proc, ids, inp
