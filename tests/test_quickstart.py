"""docs/quickstart.md, run as written: its shell blocks in order on a fresh folder, then an alert
must arrive at a real webhook receiver on loopback.

The commands are read from the page (so it cannot drift); only its fixed ports are mapped to free
ones, so that parallel runs do not collide.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.demo.webhook import WebhookReceiver

DOC = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"
DOC_PORTS = ("8000", "8081", "8090", "9000")  # server, proxy, API, webhook, as the page names them


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_has_the_steps_init_prints_in_that_order():
    script = "\n".join(shell_blocks(DOC.read_text()))
    steps = ["vlmwatch init", "vlmwatch db upgrade", "vlmwatch probe train", "vlmwatch daemon",
             "vlmwatch reference set", "vlmwatch proxy", "vlmwatch alerts test", "vlmwatch status"]
    at = [script.index(s) for s in steps]
    assert at == sorted(at)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quickstart_commands_end_with_an_alert_at_the_webhook(tmp_path):
    hook = WebhookReceiver().start()
    ports = {"9000": str(hook.server.server_address[1]), **{p: str(_free_port()) for p in DOC_PORTS[:3]}}
    script = "\n".join(shell_blocks(DOC.read_text()))
    script = re.sub(r"\b(" + "|".join(DOC_PORTS) + r")\b", lambda m: ports[m.group(1)], script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMWATCH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "quickstart.log"
    work = tmp_path / "work"
    work.mkdir()
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + script], cwd=work, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            rc = proc.wait(timeout=840)
        except subprocess.TimeoutExpired:
            rc = None
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(work.glob("*.log")))
        assert rc == 0, f"quickstart stopped (rc {rc}):\n{log.read_text()[-6000:]}\n{logs}"
        text = log.read_text()
        assert "ok, HTTP 200" in text  # `alerts test` reached the webhook
        assert re.search(r"250 requests, (\d+) sampled and labelled", text).group(1) == "250"  # sample_rate 1
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            fired = [a for a in hook.received if a.get("rule") != "vlmwatch_test" and a.get("event") == "firing"]
            if fired:
                break
            time.sleep(2)
        rules = sorted({a.get("rule") for a in hook.received})
        assert fired, f"no alert reached the webhook (got {rules}):\n{text[-3000:]}\n{logs}"
        assert {a["model"] for a in fired} == {"tiny-llava"}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        time.sleep(3)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        hook.stop()
