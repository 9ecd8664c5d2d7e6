"""The model adapter on real HF model classes: tiny LLaVA and PaliGemma fixtures, a tiny Qwen2-VL.

Reference values come from the model's own full forward pass (``output_hidden_states``,
``output_attentions``, ``logits``), never from the adapter itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from monitor.adapter import UnsupportedModelError, load_vlm
from monitor.adapter.encoding import collate
from tests.fixture_models import PROMPT, fixture_dir


def _image(colour: str = "red", shape: str = "ellipse", size: tuple[int, int] = (64, 64)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    getattr(ImageDraw.Draw(img), shape)((16, 16, 48, 40), fill=colour)
    return img


def _reference(ad, enc, **kwargs):
    """The model's own full pass over one sample (HF's outputs)."""
    batch = collate(ad.spec, [enc], ad.pad_id, ad.device, ad.dtype)
    with torch.inference_mode():
        return ad.model(**batch.kwargs, use_cache=False, **kwargs)


@pytest.fixture(scope="module", params=["llava", "paligemma"])
def ad(request, tmp_path_factory):
    return load_vlm(fixture_dir(request.param, tmp_path_factory), device="cpu")


# ---------------------------------------------------------------- tiny Qwen2-VL (built here)

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_vl(out: Path, with_real_processor: bool = False) -> Path:
    """A tiny Qwen2-VL folder: word-level tokenizer, Qwen's image processor, random weights.

    With ``with_real_processor`` (needs torchvision) the folder is saved through the real
    ``Qwen2VLProcessor``, as a downloaded checkpoint is.
    """
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    words = ["yes", "no", "is", "there", "a", "in", "the", "image", "?", "user", "assistant", "red", "circle", "blue"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>",
                                  chat_template=QWEN_TEMPLATE)
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2)
    if with_real_processor:
        from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tok,
                         video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE).save_pretrained(out)
    else:
        tok.save_pretrained(out)
        Qwen2VLImageProcessorPil(**sizes).save_pretrained(out)
        (out / "chat_template.jinja").write_text(QWEN_TEMPLATE)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=3,
                         bos_token_id=2, rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1],
                                                          "rope_theta": 10000.0}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, in_channels=3, temporal_patch_size=2),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(out)
    return out


# ---------------------------------------------------------------- shapes, layout, HF agreement


def test_encode_layout(ad):
    enc = ad.encode(_image(), PROMPT, "yes")
    n_img = int(enc.image_mask.sum())
    assert n_img == 16  # 64 px / patch 16 -> 4 x 4 image tokens
    assert enc.input_ids.dtype == torch.long and enc.input_ids.dim() == 1
    assert enc.answer_positions == [enc.length - 1] and enc.prompt_last == enc.length - 2
    assert enc.input_ids[enc.answer_positions].tolist() == ad.tokenizer("yes", add_special_tokens=False)["input_ids"]
    assert not enc.image_mask[enc.prompt_last:].any()  # the answer follows the prompt, after the image
    assert "pixel_values" in enc.extra


def test_hidden_states_per_layer_have_the_right_shapes_and_equal_hf(ad):
    enc = ad.encode(_image(), PROMPT, "yes")
    layers = list(range(ad.num_layers + 1))
    out = ad.forward([enc], layers)
    hidden_size = ad.model.config.get_text_config().hidden_size
    assert sorted(out.hidden) == layers
    ref = _reference(ad, enc, output_hidden_states=True).hidden_states
    assert len(ref) == ad.num_layers + 1
    for l in layers:
        h = out.hidden[l][0]
        assert h.shape == (enc.length, hidden_size) and h.dtype == torch.float32 and h.device.type == "cpu"
        torch.testing.assert_close(h, ref[l][0].float(), rtol=0, atol=1e-6)
    # layers differ from each other: the capture is not one tensor repeated
    assert not torch.allclose(out.hidden[1][0], out.hidden[ad.num_layers][0])


def test_same_input_gives_identical_hidden_states(ad):
    layers = list(range(ad.num_layers + 1))
    a = ad.forward([ad.encode(_image(), PROMPT, "no")], layers, attentions=True, logits=True)
    b = ad.forward([ad.encode(_image(), PROMPT, "no")], layers, attentions=True, logits=True)
    for l in layers:
        assert torch.equal(a.hidden[l][0], b.hidden[l][0])
    assert torch.equal(a.answer_logprobs[0], b.answer_logprobs[0])
    assert torch.equal(a.image_attention[0], b.image_attention[0])
    c = ad.forward([ad.encode(_image("blue"), PROMPT, "no")], layers)
    assert not torch.equal(a.hidden[ad.num_layers][0], c.hidden[ad.num_layers][0])  # the image matters


def test_stop_at_skips_later_layers_and_the_head(ad):
    ran: list[int] = []
    mods = ad.model.model.language_model.layers
    # post-hooks: a layer is recorded only once its forward has completed
    handles = [m.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i)) for i, m in enumerate(mods)]
    handles.append(ad.model.lm_head.register_forward_hook(lambda *_: ran.append(-1)))
    try:
        enc = ad.encode(_image(), PROMPT, "yes")
        stop = 2
        early = ad.forward([enc], [1, stop], stop_at=stop, attentions=True)
        assert ran == [0, 1]  # decoder layers 0 and 1 produce l = 1, 2; nothing after, no LM head
        ran.clear()
        only_emb = ad.forward([enc], [0], stop_at=0)
        assert ran == []
        ran.clear()
        full = ad.forward([enc], [0, 1, stop], attentions=True)
        assert ran == list(range(ad.num_layers))  # a full pass runs every layer, still no full-vocab head
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(early.hidden[stop][0], full.hidden[stop][0])
    assert torch.equal(early.hidden[1][0], full.hidden[1][0])
    assert torch.equal(only_emb.hidden[0][0], full.hidden[0][0])
    ref = _reference(ad, enc, output_attentions=True).attentions
    img = enc.image_mask.nonzero().flatten()
    want = ref[stop - 1][0, :, enc.prompt_last, img].mean(0)
    assert early.attention_layer == stop
    torch.testing.assert_close(early.image_attention[0], want.float(), rtol=0, atol=1e-6)


def test_batched_forward_equals_single(ad):
    samples = [(_image(), PROMPT, "yes"), (_image("blue", "rectangle"), "is there a blue square ?", "no"),
               (_image("green"), "Is there a green circle in the picture?", "yes there is a green circle")]
    encs = [ad.encode(*s) for s in samples]
    assert len({e.length for e in encs}) > 1  # padding is exercised
    layers = [0, 1, ad.num_layers]
    batched = ad.forward(encs, layers, attentions=True, logits=True)
    for i, enc in enumerate(encs):
        single = ad.forward([enc], layers, attentions=True, logits=True)
        for l in layers:
            assert batched.hidden[l][i].shape == (enc.length, single.hidden[l][0].shape[1])
            torch.testing.assert_close(batched.hidden[l][i], single.hidden[l][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(batched.answer_logprobs[i], single.answer_logprobs[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(batched.image_attention[i], single.image_attention[0], rtol=0, atol=1e-5)
        for word, p in single.first_token_probs[0].items():
            assert batched.first_token_probs[i][word] == pytest.approx(p, abs=1e-5)


def test_answer_logprobs_equal_log_softmax_of_full_pass_logits(ad):
    answer = "yes there is a red circle"
    enc = ad.encode(_image(), PROMPT, answer)
    assert len(enc.answer_ids) == 6
    out = ad.forward([enc], [ad.num_layers], logits=True, answer_words=("yes", "no", "red"))
    logits = _reference(ad, enc).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    want = torch.stack([lp[p - 1, t] for p, t in zip(enc.answer_positions, enc.answer_ids)])
    assert out.answer_logprobs[0].shape == (6,)
    torch.testing.assert_close(out.answer_logprobs[0], want, rtol=0, atol=1e-5)
    probs = lp[enc.prompt_last].exp()
    for word in ("yes", "no", "red"):
        tid = ad.tokenizer(word, add_special_tokens=False)["input_ids"][0]
        assert out.first_token_probs[0][word] == pytest.approx(float(probs[tid]), abs=1e-6)
    assert out.first_token_probs[0]["yes"] == pytest.approx(float(out.answer_logprobs[0][0].exp()), abs=1e-6)


def test_positions_keep_only_the_chosen_tokens(ad):
    encs = [ad.encode(_image(), PROMPT, "yes"), ad.encode(_image("blue"), "is there a circle ?", "no")]
    pos = [[e.prompt_last, e.answer_positions[0]] for e in encs]
    sel = ad.forward(encs, [2], positions=pos)
    full = ad.forward(encs, [2])
    for i in range(2):
        assert sel.hidden[2][i].shape[0] == 2
        assert torch.equal(sel.hidden[2][i], full.hidden[2][i][pos[i]])


def test_bad_layer_requests_are_refused(ad):
    enc = ad.encode(_image(), PROMPT, "yes")
    L = ad.num_layers
    with pytest.raises(ValueError, match="out of range"):
        ad.forward([enc], [L + 1])
    with pytest.raises(ValueError, match="beyond stop_at"):
        ad.forward([enc], [3], stop_at=2)
    with pytest.raises(ValueError, match="full pass"):
        ad.forward([enc], [1], stop_at=1, logits=True)
    with pytest.raises(ValueError, match="at least one encoded sample"):
        ad.forward([], [1])


def test_generate_greedy_is_deterministic_and_sampling_is_seeded(ad):
    img = _image()
    assert ad.generate(img, PROMPT, max_new_tokens=4) == ad.generate(img, PROMPT, max_new_tokens=4)
    a, n_prompt = ad.generate_detailed(img, PROMPT, max_new_tokens=5, temperature=1.0, n=3, seed=3, top_logprobs=2)
    b, _ = ad.generate_detailed(img, PROMPT, max_new_tokens=5, temperature=1.0, n=3, seed=3)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert n_prompt == ad.encode(img, PROMPT).length
    for g in a:
        assert len(g.token_logprobs) == len(g.token_ids) == len(g.top_logprobs) <= 5
        assert all(lp <= 0 for lp in g.token_logprobs)
        assert g.finish_reason in ("stop", "length")


# ---------------------------------------------------------------- loading, errors, fingerprint


def test_fingerprint_identifies_the_weights(ad, tmp_path):
    fp = ad.fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    copy = tmp_path / "copy"
    shutil.copytree(ad.path, copy)
    again = load_vlm(copy, device="cpu")
    assert again.fingerprint == fp  # folder location does not matter
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert load_vlm(copy, device="cpu").fingerprint != fp


def test_device_and_dtype_selection(ad):
    from monitor.adapter.loading import resolve_device, resolve_dtype

    assert ad.device.type == "cpu" and ad.dtype == torch.float32  # auto on CPU
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="dtype 'int7'"):
        load_vlm(ad.path, device="cpu", dtype="int7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_vlm(ad.path, device="cuda")
    half = load_vlm(ad.path, device="cpu", dtype="bfloat16")
    out = half.forward([half.encode(_image(), PROMPT, "yes")], [half.num_layers], logits=True)
    assert half.dtype == torch.bfloat16 and out.hidden[half.num_layers][0].dtype == torch.float32


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError) as e:
        load_vlm(tmp_path, device="cpu")
    msg = str(e.value)
    for name in ("'llama'", "LlavaForConditionalGeneration", "PaliGemmaForConditionalGeneration",
                 "Qwen2VLForConditionalGeneration"):
        assert name in msg
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "my_secret_vlm"}))
    with pytest.raises(UnsupportedModelError, match="my_secret_vlm.*LlavaForConditionalGeneration"):
        load_vlm(tmp_path, device="cpu")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vlm(tmp_path / "nope", device="cpu")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vlm(tmp_path, device="cpu")


# ---------------------------------------------------------------- Qwen2-VL


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2vl"))


def test_qwen2_vl_without_torchvision_is_detected_and_runs(qwen_dir):
    from transformers.utils import is_torchvision_available

    ad = load_vlm(qwen_dir, device="cpu")
    assert ad.family == "qwen2_vl" and ad.num_layers == 3
    if not is_torchvision_available():
        from monitor.adapter.qwen_lite import QwenImageTextProcessor

        assert isinstance(ad.processor, QwenImageTextProcessor)
    img = _image(size=(64, 48))
    enc = ad.encode(img, "is there a red circle ?", "yes")
    assert int(enc.image_mask.sum()) == 4  # 56x56 px -> 4x4 patches of 14 -> merged 2x2 -> 4 tokens
    assert torch.equal(enc.token_inputs["mm_token_type_ids"].bool(), enc.image_mask)
    out = ad.forward([enc, ad.encode(_image("blue"), "is there a blue circle ?", "no")], [0, 1, 2, 3],
                     logits=True, attentions=True)
    ref = _reference(ad, enc, output_hidden_states=True)
    for l in range(4):
        assert out.hidden[l][0].shape == (enc.length, 32)
        torch.testing.assert_close(out.hidden[l][0], ref.hidden_states[l][0].float(), rtol=0, atol=1e-5)
    lp = torch.log_softmax(ref.logits[0].float(), -1)[enc.prompt_last, enc.answer_ids[0]]
    assert float(out.answer_logprobs[0][0]) == pytest.approx(float(lp), abs=1e-5)
    assert out.image_attention[0].shape == (4,)


@pytest.mark.gpu
def test_qwen2_vl_with_real_processor_on_gpu(tmp_path):
    pytest.importorskip("torchvision")
    folder = build_tiny_qwen2_vl(tmp_path / "q", with_real_processor=True)
    ad = load_vlm(folder)  # auto: CUDA, bfloat16
    assert ad.family == "qwen2_vl" and ad.device.type == "cuda" and ad.dtype == torch.bfloat16
    from monitor.adapter.qwen_lite import QwenImageTextProcessor, load_qwen_lite

    assert not isinstance(ad.processor, QwenImageTextProcessor)
    img = _image(size=(64, 48))
    enc = ad.encode(img, "is there a red circle ?", "yes")
    lite = encode_with(load_qwen_lite(folder), ad, img)
    assert torch.equal(enc.input_ids, lite.input_ids)
    out = ad.forward([enc], [0, 3], logits=True, attentions=True)
    assert out.hidden[3][0].shape == (enc.length, 32) and out.hidden[3][0].dtype == torch.float32
    assert out.answer_logprobs[0].shape == (1,)
    assert ad.generate(img, "is there a red circle ?", max_new_tokens=3) is not None


def encode_with(processor, ad, img):
    from monitor.adapter.encoding import encode

    return encode(ad.spec, processor, img, "is there a red circle ?", "yes", image_token=ad.image_token_id)


@pytest.mark.gpu
def test_fixture_families_on_gpu_in_bfloat16(ad):
    gpu = load_vlm(ad.path)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    enc = gpu.encode(_image(), PROMPT, "yes")
    out = gpu.forward([enc], list(range(gpu.num_layers + 1)), logits=True, attentions=True)
    cpu = ad.forward([ad.encode(_image(), PROMPT, "yes")], [gpu.num_layers], logits=True)
    assert out.hidden[gpu.num_layers][0].dtype == torch.float32
    torch.testing.assert_close(out.answer_logprobs[0], cpu.answer_logprobs[0], rtol=0, atol=0.1)


def test_image_feature_cache_gives_the_same_states_and_reuses_features(ad):
    """The scorer's cache (monitor.probe.image_cache) around the adapter's own forward passes."""
    from monitor.probe.image_cache import ImageFeatureCache

    cache = ImageFeatureCache(ad.model, ad.family, max_entries=2)
    samples = [(_image(), PROMPT, "yes"), (_image(), "is there a blue circle ?", "no"),
               (_image("blue", "rectangle"), PROMPT, "no")]
    layers = [0, 2, ad.num_layers]
    plain = ad.forward([ad.encode(*s) for s in samples], layers, logits=True, attentions=True)
    for _ in range(2):  # first pass fills the cache, the second reads it
        with cache.active():
            out = ad.forward([ad.encode(*s) for s in samples], layers, logits=True, attentions=True)
        for l in layers:
            for i in range(3):
                torch.testing.assert_close(out.hidden[l][i], plain.hidden[l][i], rtol=0, atol=1e-5)
        for i in range(3):
            torch.testing.assert_close(out.answer_logprobs[i], plain.answer_logprobs[i], rtol=0, atol=1e-5)
    assert (cache.misses, cache.hits) == (2, 4)  # 2 distinct images, 6 lookups
    with cache.active():
        ad.forward([ad.encode(_image("green"), PROMPT, "no")], [1])
    assert len(cache) == 2  # bounded: the least recently used image was dropped


def test_image_feature_cache_leaves_qwen2_vl_alone():
    from monitor.probe.image_cache import ImageFeatureCache

    with pytest.raises(ValueError, match="qwen2_vl"):
        ImageFeatureCache(None, "qwen2_vl")
