"""Probe scoring throughput vs a plain full forward pass of the same model, side by side.

Methods, timed on the same pre-encoded SynPOPE samples, interleaved round by round (so load
changes on a shared machine hit every method alike), per batch size:

* ``full_forward``      the model's own ``forward`` (every layer, LM head over every position) — what
                        scoring would cost without early exit
* ``probe_torch``       ``adapter.forward(stop_at=probe layer)`` + pooling + the head in torch
* ``probe_onnx``        the same with the head in ONNX Runtime (what the daemon runs)
* ``probe_onnx_attn``   ``probe_onnx`` plus the attention signals (eager attention maps at the probe layer)
* ``scorer_end_to_end`` ``ProbeScorer.score`` on raw samples: image decode + processor + the above

plus the head alone (torch vs ONNX Runtime) on 4,096 pooled states.

Devices: ``cpu`` runs the shipped fixture (``monitor/fixtures/models/tiny-llava``); ``cuda`` runs a
LLaVA-1.5-7B-shaped model (random weights, bf16, SDPA, 576 image + ~30 text tokens) stopped at
layer 16 of 32 and is recorded as not run (with the reason) when no GPU is present. Achieved
TFLOP/s counts 2 x parameters used x tokens (attention scores left out).

Run: ``nice .venv/bin/python bench/probe_scoring.py [--quick]`` → ``bench/results/probe_scoring.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import interleaved_rounds, torch_machine_info  # noqa: E402

log = logging.getLogger("bench.probe_scoring")


def synpope_items(n: int, seed: int = 11) -> list[Any]:
    from monitor.daemon.scoring import ScoreInput
    from monitor.synpope.generate import iter_examples

    items = []
    for i, ex in enumerate(iter_examples("adversarial", n, seed=seed)):
        buf = io.BytesIO()
        ex.image.save(buf, format="PNG")
        items.append(ScoreInput(f"b{i}", "bench", ex.prompt, ex.truth, buf.getvalue(), {}))
    return items


def random_artifact(out: Path, adapter: Any, layer: int, pooling: str = "answer") -> Any:
    from monitor.probe.artifact import ProbeMeta, save_artifact
    from monitor.probe.head import ProbeHead

    hidden = adapter.model.config.get_text_config().hidden_size
    head = ProbeHead(weight=np.random.default_rng(0).normal(scale=0.02, size=hidden), bias=0.0)
    meta = ProbeMeta(
        version="bench", model_fingerprint=adapter.fingerprint, model_family=adapter.family,
        num_layers=adapter.num_layers, hidden_size=hidden, layer=layer, pooling=pooling, threshold=0.5,
        calibration="platt", c=1.0, training_data={"sha256": "", "n": 0}, splits={}, metrics={},
        layer_auroc={pooling: [0.5] * (adapter.num_layers + 1)}, layers=list(range(adapter.num_layers + 1)),
        created_at=datetime.now(timezone.utc).isoformat(),
    )
    return save_artifact(out, meta, head, plot=False)


def shaped_llava_adapter(device: torch.device, small: bool) -> Any:
    """LLaVA-1.5-7B shapes (CLIP ViT-L/14-336 + Llama-2-7B), random weights; ``small`` shrinks the
    widths and depths (not the 576 image tokens) so the code path can be smoke-tested on a CPU."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from monitor.adapter.families import detect_family
    from monitor.adapter.vlm import VLMAdapter
    from monitor.fixtures.build import LLAVA_CHAT_TEMPLATE
    from monitor.fixtures.tokenizer import IMAGE_TOKEN, SPECIAL_TOKENS, build_tokenizer

    image_token = SPECIAL_TOKENS.index(IMAGE_TOKEN)
    h, inter, layers, heads, vh, vinter, vlayers, vheads = (
        (256, 512, 4, 4, 128, 256, 2, 4) if small else (4096, 11008, 32, 32, 1024, 4096, 24, 16)
    )
    text = LlamaConfig(vocab_size=32064, hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    vision = CLIPVisionConfig(hidden_size=vh, intermediate_size=vinter, num_hidden_layers=vlayers,
                              num_attention_heads=vheads, image_size=336, patch_size=14, projection_dim=768)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token, vision_feature_layer=-2,
                      vision_feature_select_strategy="default", image_seq_length=576, projector_hidden_act="gelu",
                      pad_token_id=0)
    cfg._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    tok = build_tokenizer(chat_template=LLAVA_CHAT_TEMPLATE)
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
    )
    ad = VLMAdapter(Path("/nonexistent/llava-1.5-7b-shaped"), detect_family(cfg), model, proc)
    ad.__dict__["fingerprint"] = "random-weights-llava-1.5-7b-shaped" + ("-small" if small else "")
    return ad


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops_per_sample(adapter: Any, tokens: int, image_tokens: int, layer: int | None) -> float:
    """2 x parameters used x tokens: vision tower + projector on the image patches, decoder layers run, LM head."""
    from monitor.adapter.families import decoder_layers

    model = adapter.model
    layers = decoder_layers(model)
    per_layer = param_count(layers[0])
    n_run = len(layers) if layer is None else layer
    vision = param_count(model.model.vision_tower) + param_count(model.model.multi_modal_projector)
    lm_head = param_count(model.lm_head) if layer is None else 0
    return 2.0 * (vision * (image_tokens + 1) + per_layer * n_run * tokens + lm_head * tokens)


def methods(adapter: Any, scorer_onnx: Any, scorer_torch: Any, encs: list, items: list, bs: int, attn: bool) -> dict[str, Callable[[], Any]]:
    from monitor.adapter.encoding import collate
    from monitor.probe.extract import buckets, probe_pass_args, run_pass

    layer, pooling = scorer_onnx.layer, scorer_onnx.pooling
    groups = buckets([e.length for e in encs], bs)

    def full_forward() -> None:
        with torch.inference_mode():
            for idx in groups:
                b = collate(adapter.spec, [encs[i] for i in idx], adapter.pad_id, adapter.device, adapter.dtype)
                adapter.model(**b.kwargs, use_cache=False)

    def probe(head: Callable, attentions: bool = False) -> Callable[[], None]:
        def run() -> None:
            out = run_pass(adapter, encs, [layer], [pooling], **probe_pass_args(layer, pooling), batch_size=bs,
                           attentions=attentions)
            head(out.features[pooling][:, 0])
        return run

    fns = {
        "full_forward": full_forward,
        "probe_torch": probe(scorer_torch._head),
        "probe_onnx": probe(scorer_onnx._head),
    }
    if attn:
        fns["probe_onnx_attn"] = probe(scorer_onnx._head, attentions=True)
    fns["scorer_end_to_end"] = lambda: scorer_onnx.score(items)
    return fns


def time_round_robin(fns: dict[str, Callable[[], Any]], n: int, device: torch.device, rounds: int, warmup: int) -> dict[str, Any]:
    times = interleaved_rounds(fns, device, rounds, warmup)
    out = {}
    for name, ts in times.items():
        # best round: on a shared box other jobs only ever slow a round down, so the fastest round
        # is the closest to what the method costs; the median is kept alongside
        best, med = min(ts), statistics.median(ts)
        out[name] = {"samples_per_s": n / best, "samples_per_s_median": n / med, "ms_per_sample": 1000.0 * best / n,
                     "seconds_all": ts}
    return out


def head_only(artifact: Any, device: str) -> dict[str, Any]:
    from monitor.probe.head import torch_head
    from monitor.probe.runner import OnnxHeadRunner

    x = np.random.default_rng(1).normal(size=(4096, artifact.head.hidden_size)).astype(np.float32)
    runner = OnnxHeadRunner(artifact.onnx_path, artifact.head, device=device)
    th = torch_head(artifact.head)
    res = {}
    for name, fn in (("onnx", lambda: runner(x)), ("torch", lambda: th(torch.from_numpy(x)))):
        with torch.inference_mode():
            fn()
            ts = []
            for _ in range(20):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
        res[name] = {"us_per_4096": 1e6 * statistics.median(ts)}
    res["onnx_providers"] = runner.providers
    return res


def run_device(device: torch.device, n: int, batch_sizes: list[int], rounds: int, warmup: int, small: bool) -> dict[str, Any]:
    from monitor.adapter import load_vlm
    from monitor.fixtures.registry import fixture_dir
    from monitor.probe.scorer import ProbeScorer, ScorerOptions

    if device.type == "cuda" or small:
        adapter = shaped_llava_adapter(device, small)
        name = "llava-1.5-7b-shaped (random weights" + (", widths/depths shrunk for a CPU smoke run)" if small else ", bf16, SDPA)")
        attn = False
    else:
        adapter = load_vlm(fixture_dir("tiny-llava"), device="cpu", dtype="float32")
        name = "tiny-llava fixture (float32, eager attention)"
        attn = True
    layer = adapter.num_layers // 2
    items = synpope_items(n)
    with tempfile.TemporaryDirectory() as tmp:
        art = random_artifact(Path(tmp) / "probe", adapter, layer)
        rows = {}
        for bs in batch_sizes:
            # no image-feature cache: rounds repeat the same images, which would flatter the scorer
            opts = dict(batch_size=bs, attention_signals=attn, device=device.type, image_cache_size=0)
            s_onnx = ProbeScorer(adapter, art, served_name="bench", options=ScorerOptions(head_backend="onnx", **opts))
            s_torch = ProbeScorer(adapter, art, served_name="bench", options=ScorerOptions(head_backend="torch", **opts))
            encs = s_onnx.encode(items)
            log.info("%s: batch %d, %d samples", name, bs, n)
            res = time_round_robin(methods(adapter, s_onnx, s_torch, encs, items, bs, attn), n, device, rounds, warmup)
            full = res["full_forward"]["samples_per_s"]
            for k, v in res.items():
                v["speedup_vs_full_forward"] = v["samples_per_s"] / full
            tokens = statistics.mean(e.length for e in encs)
            img = int(encs[0].image_mask.sum())
            res["_tflops"] = {
                "full_forward": flops_per_sample(adapter, int(tokens), img, None) * full / 1e12,
                "probe_onnx": flops_per_sample(adapter, int(tokens), img, layer) * res["probe_onnx"]["samples_per_s"] / 1e12,
            }
            rows[f"batch_{bs}"] = res
        heads = head_only(art, device.type)
    return {
        "status": "run",
        "model": name,
        "num_layers": adapter.num_layers,
        "probe_layer": layer,
        "pooling": "answer",
        "parameters": param_count(adapter.model),
        "tokens_per_sample_mean": statistics.mean(e.length for e in encs),
        "image_tokens": int(encs[0].image_mask.sum()),
        "samples": n,
        "rounds": rounds,
        "batches": rows,
        "head_only": heads,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples and rounds (smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the shared box has 2 cores)")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--small-shaped", action="store_true", help="smoke-test the 7B-shaped path shrunk, on the CPU")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "probe_scoring.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("monitor").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    devices: dict[str, Any] = {}
    for dev in args.devices.split(","):
        if dev == "cpu":
            if args.small_shaped:
                devices["cpu"] = run_device(torch.device("cpu"), 8, [4], 1, 0, small=True)
                continue
            n, rounds = (64, 2) if args.quick else (256, 5)
            devices["cpu"] = run_device(torch.device("cpu"), n, [1, 16, 64], rounds, 1, small=False)
        elif dev == "cuda":
            if not torch.cuda.is_available():
                devices["cuda"] = {
                    "status": "not run",
                    "reason": "no CUDA device on the machine this ran on (torch.cuda.is_available() is False; this "
                    "session had no GPU lent to it); run `bench/probe_scoring.py --devices cuda` on a GPU host",
                    "model": "llava-1.5-7b-shaped (random weights, bf16, SDPA), stopped at layer 16 of 32, batch 64",
                    "target": ">= 2x full-forward samples/s at batch 64",
                }
                continue
            n, rounds = (128, 2) if args.quick else (512, 5)
            devices["cuda"] = run_device(torch.device("cuda"), n, [16, 64], rounds, 1, small=False)
    result = {
        "benchmark": "probe_scoring",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": torch_machine_info(args.threads, load_before, ("transformers", "onnxruntime")),
        "devices": devices,
        "notes": "samples/s from the fastest of the interleaved rounds (median alongside; rounds on a shared "
        "2-core box vary up to 10x with other jobs' load); each round processes every sample once, in "
        "length-bucketed batches. full_forward and probe_* start from encoded inputs; scorer_end_to_end "
        "starts from PNG bytes. The probe head has random weights (timing does not depend on them).",
    }
    if args.small_shaped:
        result["notes"] += " SMOKE RUN: --small-shaped (shrunk 7B-shaped model), not a result."
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for dev, d in devices.items():
        if d.get("status") != "run":
            log.info("%s: %s (%s)", dev, d["status"], d["reason"])
            continue
        for b, rows in d["batches"].items():
            log.info("%s %s: %s", dev, b, ", ".join(f"{k} {v['samples_per_s']:.1f}/s" for k, v in rows.items() if not k.startswith("_")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
