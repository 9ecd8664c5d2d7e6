"""The dashboard's routes under ``/ui``: server-rendered pages (Jinja2), inline SVG charts, no JS.

| page | path | shows | token |
| --- | --- | --- | --- |
| overview | ``/ui/`` | models, active probes, firing alerts, scoring and label lag, spot-check budget | no |
| model | ``/ui/models/{name}`` | calibration history per source and per route, reliability, alert marks | no |
| alert | ``/ui/alerts/{id}`` | rule, detector statistic vs threshold, windows, evidence sample ids | no |
| samples | ``/ui/samples`` | prompts and answers of one model's samples, filtered, paged | yes |
| sample | ``/ui/sample/{id}`` | prompt, answer, scores, labels, K spot-check answers, image | yes |
| image | ``/ui/image/{id}`` | the sample's image bytes while they are kept | yes |

"token": needs the API token when one is configured (:mod:`monitor.ui.auth`). Every response
carries a Content-Security-Policy that allows nothing but this origin, and a ``Server-Timing``
header with the time the page took on the server.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from monitor.ui import charts, filters, model_queries, queries, sample_queries
from monitor.ui.auth import NeedsLogin, ReadGuard
from storage.models import Alert, ProbeVersion, utcnow

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["build_router", "HEADERS"]

HERE = Path(__file__).resolve().parent
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MAX_WINDOWS = 500
METRICS = (("auroc", "AUROC", "auroc_ci", (0.0, 1.0)), ("ece", "ECE (equal mass)", "ece_mass_ci", (0.0, None)),
           ("agreement", "probe-evidence agreement", "agreement_ci", (0.0, 1.0)))


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    filters.install(t.env)
    return t


def build_router(settings: Settings, guard: ReadGuard) -> APIRouter:
    templates = _templates()
    router = APIRouter(prefix="/ui", include_in_schema=False)

    def render(request: Request, template: str, t0: float, status: int = 200, private: bool = False,
               **ctx: Any) -> HTMLResponse:
        ctx.update(request=request, login_required=guard.required(), signed_in=guard.required() and guard.allowed(request))
        resp = templates.TemplateResponse(request, template, ctx, status_code=status)
        resp.headers.update(HEADERS)
        resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.1f}"
        if private:
            resp.headers["Cache-Control"] = "no-store"
        return resp

    def db(request: Request) -> Session:
        return request.app.state.sessions()

    @router.get("/", response_class=HTMLResponse)
    def overview_page(request: Request) -> HTMLResponse:
        t0 = time.perf_counter()
        now = utcnow()
        with db(request) as s:
            ov = queries.overview(s, settings, now)
            return render(request, "overview.html", t0, ov=ov, now=now)

    @router.get("/models/{name:path}", response_class=HTMLResponse)
    def model_page(request: Request, name: str, probe: int | None = None,
                   n: int = Query(48, ge=2, le=MAX_WINDOWS)) -> HTMLResponse:
        t0 = time.perf_counter()
        with db(request) as s:
            versions = queries.probe_versions(s, name)
            if name not in queries.model_names(s, list(settings.models)):
                return render(request, "error.html", t0, 404, message=f"no model named {name!r}")
            pv = _chosen_probe(versions, probe)
            ctx: dict[str, Any] = dict(name=name, versions=versions, pv=pv, n=n)
            if pv is not None:
                ctx.update(_model_context(s, settings, name, pv, n))
            return render(request, "model.html", t0, **ctx)

    @router.get("/alerts/{alert_id}", response_class=HTMLResponse)
    def alert_page(request: Request, alert_id: str) -> HTMLResponse:
        t0 = time.perf_counter()
        with db(request) as s:
            alert = queries.get_alert(s, alert_id)
            if alert is None:
                return render(request, "error.html", t0, 404, message=f"no alert {alert_id!r}")
            return render(request, "alert.html", t0, **_alert_context(s, settings, alert))

    @router.get("/samples", response_class=HTMLResponse)
    def samples_page(request: Request, model: str | None = None, probe: int | None = None, route: str | None = None,
                     score_min: str | None = None, score_max: str | None = None, label: str = "any",
                     spotcheck: str = "any", before_ts: datetime | None = None,
                     before_id: str | None = None) -> HTMLResponse:
        t0 = time.perf_counter()
        guard.check(request)
        with db(request) as s:
            names = queries.model_names(s, list(settings.models))
            model = model or (names[0] if names else None)
            ctx: dict[str, Any] = dict(models=names, model=model, label_filters=sample_queries.LABEL_FILTERS,
                                       spotcheck_filters=sample_queries.SPOTCHECK_FILTERS, error=None, page=None,
                                       scan_rows=sample_queries.SCAN_ROWS, routes=[], versions=[], pv=None)
            if model is None:
                return render(request, "samples.html", t0, private=True, **ctx)
            versions = queries.probe_versions(s, model)
            pv = _chosen_probe(versions, probe)
            params = dict(model=model, probe=probe, route=route or None, score_min=score_min or None,
                          score_max=score_max or None, label=label, spotcheck=spotcheck)
            ctx.update(versions=versions, pv=pv, routes=sample_queries.routes_of(s, model), params=params)
            try:
                f = sample_queries.SampleFilter(
                    model=model, probe_version_id=pv.id if pv else None, threshold=pv.threshold if pv else 0.5,
                    route=route or None, score_min=_score(score_min, "score_min"),
                    score_max=_score(score_max, "score_max"), label=label, spotcheck=spotcheck,
                    before=(before_ts, before_id) if before_ts is not None and before_id else None)
            except ValueError as e:
                ctx["error"] = str(e)
                return render(request, "samples.html", t0, 422, private=True, **ctx)
            page = sample_queries.samples_page(s, f)
            nxt = None
            if page.next_before is not None:
                nxt = "?" + urlencode({k: v for k, v in params.items() if v not in (None, "", "any")}
                                      | {"before_ts": page.next_before[0].isoformat(), "before_id": page.next_before[1]})
            ctx.update(page=page, next_url=nxt)
            return render(request, "samples.html", t0, private=True, **ctx)

    @router.get("/sample/{sample_id:path}", response_class=HTMLResponse)
    def sample_page(request: Request, sample_id: str) -> HTMLResponse:
        t0 = time.perf_counter()
        guard.check(request)
        with db(request) as s:
            d = sample_queries.sample_detail(s, sample_id)
            if d is None:
                return render(request, "error.html", t0, 404, private=True, message=f"no sample {sample_id!r}")
            from monitor.spotcheck.answers import normalize_answer

            return render(request, "sample.html", t0, private=True, served_group=normalize_answer(d["sample"].answer), **d)

    @router.get("/image/{sample_id:path}")
    def image(request: Request, sample_id: str) -> Response:
        guard.check(request)
        with db(request) as s:
            got = sample_queries.image_bytes(s, sample_id)
        if got is None:
            return Response("image bytes not kept", status_code=404, media_type="text/plain", headers=HEADERS)
        data, media = got
        return Response(data, media_type=media, headers={**HEADERS, "Cache-Control": "private, no-store"})

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/ui/", failed: int = 0) -> HTMLResponse:
        from monitor.ui.auth import safe_next

        return render(request, "login.html", time.perf_counter(), private=True, next=safe_next(next), failed=bool(failed),
                      token_env=settings.api.token_env)

    @router.post("/login")
    async def login(request: Request) -> Response:
        return await guard.login(request)

    @router.post("/logout")
    def logout() -> Response:
        return guard.logout()

    return router


def _chosen_probe(versions: list[Any], probe: int | None) -> Any:
    """The asked-for probe version of this model, else its active one, else None."""
    return next((v for v in versions if v.id == probe), None) or next((v for v in versions if v.active), None)


def _score(text: str | None, name: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number in [0, 1], got {text!r}") from None


def _value(w: Any, key: str) -> float | None:
    v = getattr(w, key, None)
    if v is None:
        v = (w.metrics or {}).get(key)
    return float(v) if isinstance(v, (int, float)) else None


def _ci(m: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    ci = m.get(key)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return float(ci[0]), float(ci[1])
    return None, None


def _window_point(w: Any, key: str, ci_key: str) -> charts.Point:
    mid = w.window_start + (w.window_end - w.window_start) / 2
    lo, hi = _ci(w.metrics or {}, ci_key)
    y = _value(w, key)
    tip = (f"{w.source} {w.window_start:%Y-%m-%d %H:%M}: {key} "
           + ("n/a" if y is None else f"{y:.3f}") + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
           + f", n={w.n}" + (" (partial)" if w.partial else ""))
    return charts.Point(mid, y, lo, hi, hollow=bool(w.partial), title=tip)


def _marks(alerts: list[Any]) -> list[charts.Mark]:
    return [charts.Mark(a.started_at, f"{a.rule} ({a.severity}, {a.state}) {a.started_at:%H:%M:%S}",
                        resolved=a.state == "resolved", href=f"/ui/alerts/{a.id}") for a in alerts]


def _metric_rows(m: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, value, its ``<name>_ci`` or None) for a metrics dict; CI keys ride along with their value."""
    rows = []
    for k, v in sorted(m.items()):
        if k.endswith("_ci") and k[:-3] in m:
            continue
        rows.append((k, v, m.get(f"{k}_ci")))
    return rows


def _model_context(s: Session, settings: Settings, name: str, pv: ProbeVersion, n: int) -> dict[str, Any]:
    hist = model_queries.history(s, name, pv.id, n)
    starts = [w.window_start for rows in hist.values() for w in rows]
    alerts = model_queries.alerts_since(s, name, min(starts)) if starts else []
    marks = _marks(alerts)
    source_charts = [charts.time_chart(
        f"source-{key}", f"{title} by evidence source",
        [charts.Series(src, [_window_point(w, key, ci) for w in rows]) for src, rows in hist.items()],
        marks, y_range=yr) for key, title, ci, yr in METRICS]
    routes = model_queries.route_buckets(s, name, pv.id, pv.threshold, settings.calibration.bins)
    route_charts = []
    for key, title, ci, yr in METRICS:
        ci_key = "ece_mass_ci" if key == "ece" else ci
        series = []
        for route, buckets in routes.items():
            pts = []
            for b in buckets:
                m = b.metrics
                y = m.get("ece_mass") if key == "ece" else m.get(key)
                lo, hi = _ci(m, ci_key)
                pts.append(charts.Point(b.start + (b.end - b.start) / 2, y, lo, hi, hollow=m.get("n", 0) < settings.calibration.min_labels,
                                        title=f"{route}: {key} " + ("n/a" if y is None else f"{y:.3f}") + f", n={m.get('n')}"))
            series.append(charts.Series(route, pts))
        route_charts.append(charts.time_chart(f"route-{key}", f"{title} by route (newest labels)", series, marks, y_range=yr))
    by_time = hist.get("combined") or hist.get("human") or []
    reliability = [(w, charts.reliability_chart(f"reliability-{i}", f"{w.window_start:%H:%M} · n={t['n']} · ECE {t['ece']:.2f}", t))
                   for i, (w, t) in enumerate(model_queries.reliability_windows(s, name, pv.id, by_time, settings.calibration.bins))]
    from monitor.inputs.summary import input_drift_summary

    return dict(latest=queries.latest_windows(s, name, pv.id), source_charts=source_charts, route_charts=route_charts,
                routes=routes, reliability=reliability, alerts=alerts, history=hist,
                route_labels=model_queries.ROUTE_LABELS, inputs=input_drift_summary(s, name).get(name))


def _alert_context(s: Session, settings: Settings, alert: Alert) -> dict[str, Any]:
    pv = queries.probe_for_alert(s, alert)
    stats = queries.alert_statistics(alert, settings.alerts.rules)
    gauges = [charts.gauge(f"stat-{i}", f"{what}: " + ("n/a" if v is None else f"{v:.3g}")
                           + ("" if thr is None else f" / threshold {thr:.3g}"), v, thr)
              for i, (what, v, thr) in enumerate(stats)]
    source = (alert.window or {}).get("source") or "combined"
    around, chart = [], None
    if pv is not None:
        around = model_queries.windows_around(s, alert.model, pv.id, source, alert.started_at, task=alert.task)
        if around:
            of = f" of task {alert.task}" if alert.task else ""
            chart = charts.time_chart("alert-windows", f"{source} windows{of} around the alert",
                                      [charts.Series(title, [_window_point(w, key, ci) for w in around])
                                       for key, title, ci, _ in METRICS], _marks([alert]))
    ids = [str(i) for i in ((alert.evidence or {}).get("sample_ids") or [])][:100]
    evidence = sample_queries.rows_for_ids(s, ids, pv.id if pv else None) if ids else []
    metrics = alert.metrics or {}
    return dict(alert=alert, pv=pv, gauges=gauges, around=around, chart=chart, evidence_rows=evidence,
                threshold=pv.threshold if pv else 0.5, calibration_window=metrics.get("calibration_window"),
                metric_rows=_metric_rows({k: v for k, v in metrics.items() if k != "calibration_window"}),
                summary=(alert.evidence or {}).get("summary"), reference=(alert.evidence or {}).get("reference"),
                as_json=lambda v: json.dumps(v, indent=1, default=str, sort_keys=True))


def mount(app: FastAPI, settings: Settings, token: Callable[[], str | None]) -> None:
    """Add the dashboard to ``app``: the routes, the static files, the login redirect."""
    guard = ReadGuard(token)
    app.include_router(build_router(settings, guard))
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    @app.exception_handler(NeedsLogin)
    async def _needs_login(request: Request, exc: NeedsLogin) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/ui/login?" + urlencode({"next": exc.next_path}), status_code=303)
        return JSONResponse({"error": f"this page shows samples: send Authorization: Bearer <token> "
                                      f"(${settings.api.token_env}) or sign in at /ui/login"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
