"""One loaded copy of each served model per process, shared by the scorer and the spot checks.

A daemon scores and spot-checks the same served model; loading it once halves its GPU memory
(two 7B copies would not fit beside each other on many cards). Sharing is safe because every
use of the model holds ``adapter.lock`` (forward passes, generation, spot checks, and the
scorer's image-feature cache, which patches the model while it runs).

A copy is keyed by folder, device and dtype, and replaced when the folder's fingerprint changes
(new weights deployed under the same path).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from monitor.adapter.loading import fingerprint_folder

__all__ = ["shared_vlm", "folder_fingerprint"]

log = logging.getLogger(__name__)

_fp_cache: dict[str, tuple[tuple, str]] = {}
_fp_lock = threading.Lock()
_adapters: dict[tuple[str, str, str], tuple[str, Any]] = {}
_load_lock = threading.Lock()


def _stat_key(path: Path) -> tuple:
    items = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            items.append((str(p.relative_to(path)), st.st_size, st.st_mtime_ns))
    return tuple(items)


def folder_fingerprint(path: str | Path) -> str:
    """The adapter's fingerprint of a model folder, recomputed only when a file there changed."""
    p = Path(path).resolve()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"model folder {p} has no config.json")
    key = _stat_key(p)
    with _fp_lock:
        hit = _fp_cache.get(str(p))
        if hit and hit[0] == key:
            return hit[1]
    fp = fingerprint_folder(p)
    with _fp_lock:
        _fp_cache[str(p)] = (key, fp)
    return fp


def shared_vlm(path: str | Path, *, device: Any = "auto", dtype: Any = "auto") -> Any:
    """The process's adapter for ``path`` (loaded on first use, reloaded after a redeploy)."""
    from monitor.adapter.vlm import load_vlm

    p = Path(path).resolve()
    fp = folder_fingerprint(p)
    key = (str(p), str(device), str(dtype))
    with _load_lock:  # two jobs asking at once wait for one load
        hit = _adapters.get(key)
        if hit is not None and hit[0] == fp:
            return hit[1]
        if hit is not None:
            log.info("model folder %s changed (fingerprint %s -> %s): loading it again", p, hit[0][:12], fp[:12])
        adapter = load_vlm(p, device=device, dtype=dtype)
        _adapters[key] = (fp, adapter)
        return adapter
