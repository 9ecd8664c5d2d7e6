"""Self-consistency cost: K=10 sampled answers with one shared prefill vs one greedy answer.

Side by side in one run, interleaved round by round (so load changes hit every method alike),
per device and answer length (8 and 32 tokens, forced: ``min_new_tokens = max_new_tokens``):

* ``one_greedy``           HF ``generate`` greedy, batch 1 — what the server paid for the served answer
* ``k10_shared_prefill``   ``monitor.spotcheck.sampler.sample_shared_prefill``: prefill once, repeat the cache to 10 streams
* ``k10_shared_static``    the same over a static cache + ``torch.compile`` (CUDA graphs); CUDA only
* ``k10_num_return_sequences``  HF ``generate(do_sample=True, num_return_sequences=10)`` (10 prompt passes)
* ``k10_separate_calls``   ten HF ``generate`` calls at batch 1

The floor is the time the hardware needs at best: the prefill at max(weights / bandwidth,
prefill FLOPs / measured matmul rate), plus for each of the n-1 decode steps (the first token
comes from the prefill) max((text weights + K x cached keys/values) / bandwidth, 2 x params x K /
matmul rate). Bandwidth is measured with a large tensor copy, the matmul rate with a square GEMM.

Devices: ``cpu`` runs the shipped fixture model (``monitor/fixtures/models/tiny-llava``); ``cuda``
runs a LLaVA-1.5-7B-shaped model with random weights in bfloat16 when a GPU is present, and is
recorded as not run (with the reason) otherwise. ``extra.cpu_llava_layout_small`` adds a CPU row
with LLaVA-1.5's layout (576 image tokens, 603-token prompt) at small widths (22M parameters), where
the prompt pass is a large share of the cost, as it is for real VLMs (skip with ``--no-extra``).
The ratio ``k10 / one`` on a CPU is bounded below by the decode FLOPs (ten streams cost ten times
the arithmetic, which a CPU does not get for free as a GPU's idle compute units give it).

Run: ``nice .venv/bin/python bench/self_consistency.py [--quick]`` → ``bench/results/self_consistency.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._common import interleaved_rounds, sync, torch_machine_info  # noqa: E402
from monitor.spotcheck.sampler import sample_shared_prefill  # noqa: E402
from monitor.spotcheck.static_decode import StaticDecoder  # noqa: E402

log = logging.getLogger("bench.self_consistency")

K = 10
LENGTHS = (8, 32)
OUT = Path(__file__).resolve().parent / "results" / "self_consistency.json"


# --- hardware --------------------------------------------------------------------------------
def measure_bandwidth(device: torch.device, mbytes: int) -> float:
    """Bytes per second of a large device-to-device copy (read + write counted)."""
    n = mbytes * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(7):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n * 4 / min(times[1:])


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / min(times[1:])


def model_shape(model: torch.nn.Module) -> dict[str, Any]:
    vision = sum(p.numel() for n, p in model.named_parameters() if "vision" in n or "projector" in n)
    total = sum(p.numel() for p in model.parameters())
    elem = next(model.parameters()).element_size()
    tc = model.config.get_text_config()
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    kv_per_token = 2 * tc.num_hidden_layers * tc.num_key_value_heads * head_dim * elem
    return {
        "params_total": total,
        "params_vision": vision,
        "params_text": total - vision,
        "weight_bytes": total * elem,
        "text_weight_bytes": (total - vision) * elem,
        "kv_bytes_per_token": kv_per_token,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }


def floor_seconds(shape: dict[str, Any], prompt_len: int, image_tokens: int, n: int, k: int, bw: float, flops: float) -> float:
    pre_flops = 2 * shape["params_text"] * prompt_len + 2 * shape["params_vision"] * image_tokens
    t = max(shape["weight_bytes"] / bw, pre_flops / flops)
    for step in range(1, n):
        kv = k * shape["kv_bytes_per_token"] * (prompt_len + step)
        t += max((shape["text_weight_bytes"] + kv) / bw, 2 * shape["params_text"] * k / flops)
    return t


# --- models ----------------------------------------------------------------------------------
def fixture_inputs(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor, dict[str, Any], int, str, int]:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from monitor.fixtures.registry import fixture_dir

    d = fixture_dir("tiny-llava")
    proc = AutoProcessor.from_pretrained(d)
    model = AutoModelForImageTextToText.from_pretrained(d).eval().to(device)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in the image?"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inp = dict(proc(images=Image.new("RGB", (64, 64), (40, 160, 90)), text=text, return_tensors="pt").to(device))
    ids = inp.pop("input_ids")
    return model, ids, inp, int(model.config.image_seq_length), "monitor/fixtures/models/tiny-llava", proc.tokenizer.eos_token_id


LLAVA_7B = dict(text=(4096, 11008, 32, 32), vision=(1024, 4096, 24, 16), dtype=torch.bfloat16)
LLAVA_SMALL = dict(text=(256, 688, 4, 4), vision=(256, 688, 4, 4), dtype=torch.float32)  # CPU: 576 image tokens


def llava_shaped_inputs(
    device: torch.device, shape: dict[str, Any] = LLAVA_7B
) -> tuple[torch.nn.Module, torch.Tensor, dict[str, Any], int, str, int]:
    """LLaVA-1.5 layout (CLIP ViT-*/14 at 336 px = 576 image tokens, Llama text), random weights.

    ``LLAVA_7B`` is LLaVA-1.5-7B's shape (CLIP ViT-L/14-336 + Llama-2-7B) in bfloat16.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    th, ti, tl, tn = shape["text"]
    vh, vi, vl, vn = shape["vision"]
    text = LlamaConfig(
        vocab_size=32064, hidden_size=th, intermediate_size=ti, num_hidden_layers=tl, num_attention_heads=tn,
        num_key_value_heads=tn, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
        pad_token_id=0,
    )  # fmt: skip
    vision = CLIPVisionConfig(
        hidden_size=vh, intermediate_size=vi, num_hidden_layers=vl, num_attention_heads=vn, image_size=336,
        patch_size=14, projection_dim=768,
    )  # fmt: skip
    cfg = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=32000, vision_feature_layer=-2,
        vision_feature_select_strategy="default", image_seq_length=576, projector_hidden_act="gelu",
    )  # fmt: skip
    old = torch.get_default_dtype()
    torch.set_default_dtype(shape["dtype"])
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    g = torch.Generator().manual_seed(0)
    words = lambda m: torch.randint(3, 32000, (m,), generator=g)  # noqa: E731
    ids = torch.cat([torch.tensor([1]), words(6), torch.full((576,), 32000), words(20)]).view(1, -1).to(device)
    pixels = torch.randn(1, 3, 336, 336, generator=g).to(device, shape["dtype"])
    name = "llava-1.5-7b-shaped" if shape is LLAVA_7B else f"llava-1.5-layout text {shape['text']} vision {shape['vision']}"
    return model, ids, {"pixel_values": pixels, "attention_mask": torch.ones_like(ids)}, 576, f"{name} (random weights)", 2


# --- methods ---------------------------------------------------------------------------------
def methods(model, ids, extra, n: int, eos: int, device: torch.device) -> dict[str, Callable[[], Any]]:
    gen = dict(max_new_tokens=n, min_new_tokens=n, pad_token_id=0, eos_token_id=eos)
    sample = dict(do_sample=True, temperature=1.0, top_k=None, top_p=None)
    seeds = list(range(K))
    m: dict[str, Callable[[], Any]] = {
        "one_greedy": lambda: model.generate(input_ids=ids, **extra, do_sample=False, **gen),
        "k10_shared_prefill": lambda: sample_shared_prefill(
            model, ids, extra, k=K, temperature=1.0, max_new_tokens=n, min_new_tokens=n, seeds=seeds, eos_token_ids=[eos]
        ),
        "k10_num_return_sequences": lambda: model.generate(input_ids=ids, **extra, num_return_sequences=K, **sample, **gen),
        "k10_separate_calls": lambda: [model.generate(input_ids=ids, **extra, **sample, **gen) for _ in range(K)],
    }
    if device.type == "cuda":
        static = StaticDecoder(model, compile=True)
        m["k10_shared_static"] = lambda: sample_shared_prefill(
            model, ids, extra, k=K, temperature=1.0, max_new_tokens=n, min_new_tokens=n, seeds=seeds,
            eos_token_ids=[eos], decode=static,
        )  # fmt: skip
    return m


def time_methods(fns: dict[str, Callable[[], Any]], device: torch.device, rounds: int, warmup: int) -> dict[str, Any]:
    with torch.inference_mode():
        times = interleaved_rounds(fns, device, rounds, warmup)
    return {
        name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "rounds": len(t)}
        for name, t in times.items()
    }


def run_device(device: torch.device, rounds: int, warmup: int, build: Callable[[torch.device], Any] | None = None) -> dict[str, Any]:
    if device.type == "cuda":
        model, ids, extra, image_tokens, name, eos = (build or llava_shaped_inputs)(device)
        bw = measure_bandwidth(device, 2048)
        flops = measure_matmul_flops(device, torch.bfloat16, 8192)
        card = torch.cuda.get_device_name(device)
    else:
        model, ids, extra, image_tokens, name, eos = (build or fixture_inputs)(device)
        bw = measure_bandwidth(device, 256)
        flops = measure_matmul_flops(device, torch.float32, 1024)
        card = platform.processor() or platform.machine()
    shape = model_shape(model)
    prompt_len = int(ids.shape[1])
    out: dict[str, Any] = {
        "status": "ok",
        "hardware": card,
        "model": name,
        "shape": shape,
        "prompt_tokens": prompt_len,
        "image_tokens": image_tokens,
        "measured_bandwidth_gb_s": bw / 1e9,
        "measured_matmul_tflops": flops / 1e12,
        "lengths": {},
    }
    for n in LENGTHS:
        log.info("%s: %d-token answers, %d rounds", device.type, n, rounds)
        res = time_methods(methods(model, ids, extra, n, eos, device), device, rounds, warmup)
        one = res["one_greedy"]["median_s"]
        best_k10 = min(v["median_s"] for k, v in res.items() if k.startswith("k10_shared"))
        floor = floor_seconds(shape, prompt_len, image_tokens, n, K, bw, flops)
        out["lengths"][str(n)] = {
            "methods": res,
            "floor_seconds": floor,
            "floor_one_seconds": floor_seconds(shape, prompt_len, image_tokens, n, 1, bw, flops),
            "ratio_k10_vs_one": best_k10 / one,
            "ratios_vs_one": {k: v["median_s"] / one for k, v in res.items()},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the bench box is shared)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-extra", action="store_true", help="skip the CPU LLaVA-layout row with 576 image tokens")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 15)
    load_before = os.getloadavg()
    devices: dict[str, Any] = {"cpu": run_device(torch.device("cpu"), rounds, warmup=2)}
    extra_rows: dict[str, Any] = {}
    if not args.no_extra:
        log.info("cpu: LLaVA-1.5 layout, small widths, 576 image tokens")
        extra_rows["cpu_llava_layout_small"] = run_device(
            torch.device("cpu"), max(3, rounds // 5), warmup=1, build=lambda d: llava_shaped_inputs(d, LLAVA_SMALL)
        )
    if torch.cuda.is_available():
        devices["cuda"] = run_device(torch.device("cuda"), rounds, warmup=3)
    else:
        devices["cuda"] = {
            "status": "not_run",
            "reason": "no CUDA device on the machine this ran on (torch.cuda.is_available() is False); "
            "the cuda rows (LLaVA-1.5-7B-shaped random weights, bf16, static cache + torch.compile) are written but unmeasured",
            "model": "llava-1.5-7b-shaped (random weights)",
        }
    summary: dict[str, Any] = {}
    for dev, d in devices.items():
        summary[dev] = {}
        for n in LENGTHS:
            if d["status"] != "ok":
                summary[dev][str(n)] = {
                    "status": "not_run", "reason": d["reason"],
                    "ratio_k10_vs_one": None, "k10_seconds": None, "one_seconds": None, "floor_seconds": None,
                }  # fmt: skip
                continue
            row = d["lengths"][str(n)]
            k10 = min(v["median_s"] for k, v in row["methods"].items() if k.startswith("k10_shared"))
            summary[dev][str(n)] = {
                "status": "ok",
                "ratio_k10_vs_one": row["ratio_k10_vs_one"],
                "k10_seconds": k10,
                "one_seconds": row["methods"]["one_greedy"]["median_s"],
                "floor_seconds": row["floor_seconds"],
                "k10_over_floor": k10 / row["floor_seconds"],
                "num_return_sequences_seconds": row["methods"]["k10_num_return_sequences"]["median_s"],
                "separate_calls_seconds": row["methods"]["k10_separate_calls"]["median_s"],
            }
    result = {
        "benchmark": "self_consistency",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "k": K,
        "temperature": 1.0,
        "answer_lengths": list(LENGTHS),
        "rounds": rounds,
        "machine": torch_machine_info(args.threads, load_before),
        "summary": summary,
        "devices": devices,
        "extra": extra_rows,
        "notes": "k10_seconds is the faster shared-prefill path (dynamic cache; on CUDA also static cache + "
        "torch.compile). Timings are medians over interleaved rounds. floor_seconds: see the module docstring.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s: %s", args.out, json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
