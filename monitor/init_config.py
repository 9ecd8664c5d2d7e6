"""``vlmwatch init``: a commented ``vlmwatch.yaml`` for an existing server, with settings sized to
the traffic and label rates the operator expects.

The defaults (``calibration.window: 1h``, ``min_labels: 100``, ``reference_n: 1000``,
``detect.horizon: 20000``, 30 s job intervals) suit steady production traffic; a trial with a few
labels a minute stays silent under them. :func:`derive` sizes them from the expected rates:

* labels per minute ``L`` = requests per minute x ``proxy.sample_rate`` x label share (the share
  of *sampled* responses that get a label: labels count only for stored samples);
* ``calibration.min_labels``: 100, or the labels of an hour when fewer (at least 30);
* ``calibration.window``: long enough to hold ``min_labels`` labels (1m .. 1h, a round length);
* ``calibration.rolling_n``: about 30 minutes of labels (2 x ``min_labels`` .. 500);
* ``calibration.reference_n``: an hour of labels (2 x ``min_labels`` .. 1000);
* ``detect.horizon``: the labels the trial will see (1,000 .. 20,000), so the false-alarm target
  is spread over the trial, not over 20,000 labels it will never reach;
* calibrate and detect intervals: about ten new labels apart (2 .. 30 s).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Traffic", "derive", "render_config", "next_steps"]

_WINDOWS = ((1, "1m"), (2, "2m"), (5, "5m"), (10, "10m"), (15, "15m"), (30, "30m"), (60, "1h"))


@dataclass(frozen=True)
class Traffic:
    requests_per_minute: float = 60.0
    sample_rate: float = 0.1  # proxy.sample_rate
    label_share: float = 0.1  # share of sampled responses that get a label
    trial_hours: float = 24.0

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0:
            raise ValueError(f"requests per minute must be > 0, got {self.requests_per_minute}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample rate must be in (0, 1], got {self.sample_rate}")
        if not 0 < self.label_share <= 1:
            raise ValueError(f"label share must be in (0, 1], got {self.label_share}")
        if self.trial_hours <= 0:
            raise ValueError(f"trial hours must be > 0, got {self.trial_hours}")

    @property
    def labels_per_minute(self) -> float:
        return self.requests_per_minute * self.sample_rate * self.label_share


def _clamp(v: float, lo: float, hi: float) -> int:
    return int(round(min(max(v, lo), hi)))


def derive(t: Traffic) -> dict[str, dict[str, object]]:
    """The settings a trial at ``t``'s rates needs (see the module docstring for each rule)."""
    per_min = t.labels_per_minute
    min_labels = _clamp(per_min * 60, 30, 100)
    need_minutes = min_labels / per_min
    window = next((name for minutes, name in _WINDOWS if minutes >= need_minutes), "1h")
    interval = float(_clamp(600 / per_min, 2, 30))  # seconds for about ten new labels
    return {
        "calibration": {"window": window, "min_labels": min_labels,
                        "rolling_n": _clamp(per_min * 30, 2 * min_labels, 500),
                        "reference_n": _clamp(per_min * 60, 2 * min_labels, 1000)},
        "detect": {"horizon": _clamp(per_min * 60 * t.trial_hours, 1000, 20_000)},
        "daemon": {"calibrate_interval_seconds": interval, "detect_interval_seconds": interval},
    }


def render_config(*, upstream: str, model_name: str, model_dir: str, traffic: Traffic, database: str,
                  proxy_listen: str, api_listen: str, webhook: str | None) -> str:
    """The commented YAML ``init`` writes (it loads with :func:`monitor.config.load_config`)."""
    d = derive(traffic)
    cal, det, dae = d["calibration"], d["detect"], d["daemon"]
    hook = (f"""  channels:
    - name: oncall
      kind: webhook  # webhook | slack | alertmanager
      url: {webhook}
      # secret_env: VLMWATCH_WEBHOOK_SECRET  # env var holding the HMAC secret: signed deliveries
""" if webhook else """  channels: []  # add one, then `vlmwatch alerts test`:
  #  - {name: oncall, kind: webhook, url: http://alerts.internal/hook}
""")
    return f"""# vlmwatch.yaml written by `vlmwatch init`. Every other key keeps its default: see
# config.example.yaml. VLMWATCH_<SECTION>__<KEY> environment variables override any key.
#
# Sized for: {traffic.requests_per_minute:g} requests/min, {traffic.sample_rate:g} of them sampled by the proxy,
# {traffic.label_share:g} of the sampled responses labelled ({traffic.labels_per_minute:.2f} labels/min),
# a {traffic.trial_hours:g} h trial. Re-run `vlmwatch init --force` with other rates to resize.

storage:
  url: {database}  # SQLite file here; postgresql+psycopg://user@host/db to run several daemons

# served model name (what clients send in `model`) -> the monitor's own copy of the weights
models:
  {model_name}:
    path: {model_dir}  # local folder (save_pretrained layout); nothing is downloaded

proxy:
  listen: {proxy_listen}  # point clients here instead of at the server
  upstream_url: {upstream}  # your OpenAI-compatible server (no path)
  sample_rate: {traffic.sample_rate:g}  # share of requests stored and scored (by request hash)
  rates: {{}}  # per model or "model:/v1/chat/completions" overrides; 1.0 stores every request of that model

api:
  listen: {api_listen}  # HTTP API (served by the daemon): samples, labels, alerts, /metrics, /ui/

calibration:
  window: {cal['window']}  # time windows long enough for min_labels labels (default 1h)
  min_labels: {cal['min_labels']}  # windows with fewer labels are partial and never alert (default 100)
  rolling_n: {cal['rolling_n']}  # rolling window: the last N samples with evidence (~30 min of labels; default 500)
  reference_n: {cal['reference_n']}  # default reference: first N labelled samples (~1 h; default 1000); or pin one

detect:
  horizon: {det['horizon']}  # the false-alarm target holds over this many labels (the trial's; default 20000)

daemon:
  calibrate_interval_seconds: {dae['calibrate_interval_seconds']:g}  # ~10 new labels apart (default 30)
  detect_interval_seconds: {dae['detect_interval_seconds']:g}  # (default 30)

alerts:
{hook}"""


def next_steps(config: str, model_name: str, model_dir: str, api_listen: str) -> list[tuple[str, str]]:
    """(what, command) in the order a newcomer runs them."""
    c = "" if config == "vlmwatch.yaml" else f"--config {config} "
    return [
        ("create the database schema", f"vlmwatch {c}db upgrade"),
        ("train a probe for the model on labelled samples (or import one: "
         f"vlmwatch {c}probe activate --served-name {model_name} --probe PROBE_DIR)",
         f"vlmwatch {c}probe train --model {model_dir} --data labelled.jsonl --out probes/v1 "
         f"--register --served-name {model_name}"),
        ("start the daemon (scoring, spot checks, calibration, detectors, alerts, API)", f"vlmwatch {c}daemon &"),
        ("pin a reference: a labelled validation set answered by the model, scored by the daemon",
         f"vlmwatch {c}reference set --model {model_name} --samples reference.jsonl"),
        ("start the sampling proxy and point clients at it (send temperature 0 for greedy answers)",
         f"vlmwatch {c}proxy &"),
        ("check that alerts reach you", f"vlmwatch {c}alerts test"),
        ("label sampled responses (GET /v1/samples?response_id=ID says which)",
         f"curl -s http://{api_listen}/v1/labels -H 'content-type: application/json' "
         "-d '{\"response_id\": \"chatcmpl-...\", \"correct\": true, \"source\": \"human\"}'"),
        ("see where things stand, and when the label detectors arm", f"vlmwatch {c}status"),
    ]

