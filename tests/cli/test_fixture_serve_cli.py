"""`vlmwatch fixture serve --served-name` serves the fixture under the name clients send."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_name_is_the_name_the_server_answers_with(tmp_path):
    port = _free_port()
    exe = Path(sys.executable).parent / "vlmwatch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMWATCH_")}
    proc = subprocess.Popen([str(exe), "fixture", "serve", "--model", "tiny-llava", "--port", str(port),
                             "--served-name", "llava-prod"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "fixture server did not start"
                time.sleep(0.3)
        assert [m["id"] for m in models["data"]] == ["llava-prod"]
    finally:
        proc.terminate()
        proc.wait(30)
