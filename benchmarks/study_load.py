"""Load benchmark of the reader-study server: K readers rating at once, as fast as allowed.

    python benchmarks/study_load.py --readers 12 --backend sqlite
    python benchmarks/study_load.py --readers 12 24 --backend sqlite postgresql --client ws
    python benchmarks/study_load.py --readers 12 --client chromium

For each backend and K it creates a study (512 x 512 cases, the default protocol: minimum
viewing time 500 ms), starts ``study serve`` in its own process, and lets K simulated readers
rate every case as fast as the protocol allows (a press 10 ms after the minimum viewing time):

* ``--client ws`` speaks Streamlit's websocket protocol the way the page does (protobuf
  ``BackMsg`` with the viewer component's trigger; ``ForwardMsg`` deltas back): a case counts
  as shown when its element arrives;
* ``--client chromium`` drives real pages in headless Debian chromium (Playwright); a case
  counts as shown when the viewer has drawn it (its own ``performance.now()`` log).

Reported per run: client-side click-to-next-case latency (median, p95, max), server-side
time from the press reaching the script to the next case rendered (the app's timing log,
``$MAME_EVAL_STUDY_TIMINGS``), presses acknowledged (the next case arrived) vs ratings stored
in the database, lost (acknowledged, not stored) and duplicated (stored twice or without a
press), the machine's load average before and after, and each K's p95 as a ratio of the
K = 1 baseline measured in the same invocation. PostgreSQL runs start a throw-away server
from Debian's package (``tests/pg_server.py``, fsync on) unless ``--db URL`` is given.
Results: ``--out`` (default ``runs/study_load``) as ``results.json`` and ``latencies.csv``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mame_eval.studies.study import create_study, open_study, serve  # noqa: E402

VIEWER = "mame_eval_reader_viewer"


# --------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------


def _images(folder: Path, n: int, seed: int, size: int) -> Path:
    """Smooth random textures, ``size`` px: the cost of serving real 512-px cases."""
    from PIL import Image, ImageFilter

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8))
        a.filter(ImageFilter.GaussianBlur(3)).save(folder / f"{i}.png")
    return folder


def make_study(root: Path, k: int, n: int, size: int, db: str | None, port: int):
    real = _images(root / "real", n, 1, size)
    syn = _images(root / "syn", n, 2, size)
    readers = [f"r{i:02d}" for i in range(k)]
    res = create_study(root / "study", real, syn, n=n, readers=readers, seed=1, db=db,
                       address="127.0.0.1", port=port)
    st = open_study(res.path, db)
    with st.store() as store:
        for r in readers:  # past the instructions page: every reader has pressed "Start"
            store.log("started", r)
    return res, st, readers


# --------------------------------------------------------------------------------------------
# client 1: Streamlit's websocket protocol
# --------------------------------------------------------------------------------------------


def _viewer_data(fm):
    """(component id, data) when a ForwardMsg carries the viewer, else None."""
    if fm.WhichOneof("type") != "delta" or fm.delta.WhichOneof("type") != "new_element":
        return None
    el = fm.delta.new_element
    if el.WhichOneof("type") != "bidi_component":
        return None
    bc = el.bidi_component
    if bc.component_name != VIEWER:
        return None
    raw = bc.json if bc.WhichOneof("data") == "json" else bc.mixed.json
    return bc.id, json.loads(raw)


def _is_done(fm) -> bool:
    if fm.WhichOneof("type") != "delta" or fm.delta.WhichOneof("type") != "new_element":
        return False
    el = fm.delta.new_element
    return el.WhichOneof("type") == "alert" and "cases are rated" in el.alert.body


async def ws_reader(port: int, token: str, n: int, min_view_ms: int, out: list, stats: dict):
    import websockets
    from streamlit.components.v2.bidi_component.main import _make_trigger_id
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    uri = f"ws://127.0.0.1:{port}/_stcore/stream"
    async with websockets.connect(uri, subprotocols=["streamlit"], max_size=None,
                                  open_timeout=60, ping_interval=None) as ws:

        async def send(widget=None):
            bm = BackMsg()
            bm.rerun_script.query_string = f"token={token}"
            if widget is not None:
                w = bm.rerun_script.widget_states.widgets.add()
                w.id, w.json_trigger_value = widget
            await ws.send(bm.SerializeToString())

        async def next_case(expect_k: int | None, timeout: float = 120.0):
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no case {expect_k} within {timeout:.0f} s")
                fm = ForwardMsg()
                fm.ParseFromString(await asyncio.wait_for(ws.recv(), left))
                if _is_done(fm):
                    return None
                got = _viewer_data(fm)
                if got is not None and (expect_k is None or got[1]["k"] == expect_k):
                    return got

        await send()
        got = await next_case(None)
        press = 0
        while got is not None:
            comp_id, d = got
            shown = time.perf_counter()
            await asyncio.sleep(max(0.0, (min_view_ms + 10) / 1000 - (time.perf_counter() -
                                                                          shown)))
            press += 1
            payload = {"view": d["view"], "episode": d["episode"], "score": int(d["k"] % 5),
                       "press": f"{token[:6]}-{press}", "via": "key",
                       "shown_ms": min_view_ms + 10}
            trig = (_make_trigger_id(comp_id, "events"),
                    json.dumps([{"event": "rate", "value": payload}]))
            t0 = time.perf_counter()
            await send(trig)
            stats["sent"] += 1
            got = await next_case(d["k"] + 1 if d["k"] < n else None)
            out.append(1000 * (time.perf_counter() - t0))
            stats["acked"] += 1


async def run_ws(port, tokens, n, min_view_ms):
    lat: list[float] = []
    stats = {"sent": 0, "acked": 0, "errors": []}

    async def one(tok):
        try:
            await ws_reader(port, tok, n, min_view_ms, lat, stats)
        except Exception as exc:  # reported, not raised: the others go on
            stats["errors"].append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(t) for t in tokens))
    return lat, stats


# --------------------------------------------------------------------------------------------
# client 2: headless chromium
# --------------------------------------------------------------------------------------------


async def run_chromium(links, n, min_view_ms):
    from playwright.async_api import async_playwright

    lat: list[float] = []
    stats = {"sent": 0, "acked": 0, "errors": []}
    ready = ("k => window.__mameReader && window.__mameReader.data && "
             "window.__mameReader.data.k === k && window.__mameReader.state().state === 'ready'")
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-timer-throttling",
                  "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"])

        loaded = {"n": 0}
        all_loaded = asyncio.Event()
        gate = asyncio.Semaphore(3)  # opening 24 pages at once would measure the page load

        async def one(link):
            ctx = await browser.new_context(viewport={"width": 1366, "height": 768})
            page = await ctx.new_page()
            try:
                async with gate:
                    await page.goto(link, timeout=180_000)
                    await page.wait_for_function(ready, arg=1, timeout=180_000, polling=50)
                loaded["n"] += 1
                if loaded["n"] == len(links):
                    all_loaded.set()
                await all_loaded.wait()  # then every reader starts rating at once
                for k in range(1, n + 1):
                    await page.wait_for_function(ready, arg=k, timeout=120_000, polling=50)
                    await page.wait_for_timeout(min_view_ms + 10)
                    await page.keyboard.press(str(k % 5))
                    stats["sent"] += 1
                    if k < n:
                        await page.wait_for_function(ready, arg=k + 1, timeout=120_000,
                                                     polling=50)
                    else:
                        await page.get_by_text("cases are rated").wait_for(timeout=120_000)
                    stats["acked"] += 1
                log = await page.evaluate("window.__mameReader.log")
                presses = [e for e in log if e["kind"] == "press"]
                shown = [e for e in log if e["kind"] == "shown"]
                display = [e for e in log if e["kind"] == "display"]
                for pr in presses:
                    nxt = [s["t"] for s in shown if s["t"] > pr["t"]]
                    arrived = [d["t"] for d in display if d["t"] > pr["t"]]
                    if nxt:
                        lat.append(nxt[0] - pr["t"])
                    if nxt and arrived:  # press -> data in the page -> image on screen
                        stats.setdefault("arrive_ms", []).append(arrived[0] - pr["t"])
                        stats.setdefault("draw_ms", []).append(nxt[0] - arrived[0])
            except Exception as exc:
                stats["errors"].append(f"{type(exc).__name__}: {exc}")
                loaded["n"] += 1
                if loaded["n"] >= len(links):
                    all_loaded.set()
            finally:
                await ctx.close()

        await asyncio.gather(*(one(link) for link in links))
        await browser.close()
    return lat, stats


# --------------------------------------------------------------------------------------------
# one measurement
# --------------------------------------------------------------------------------------------


def _summary(xs) -> dict:
    a = np.asarray(xs, dtype=float)
    if a.size == 0:
        return {"n": 0, "median": None, "p95": None, "max": None}
    return {"n": int(a.size), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(k: int, n: int, size: int, backend: str, client: str, db: str | None,
            workdir: Path, profile: Path | None = None) -> dict:
    port = _free_port()
    root = Path(tempfile.mkdtemp(prefix=f"load-{backend}-{k}-", dir=workdir))
    res, st, readers = make_study(root, k, n, size, db, port)
    timings = root / "timings.jsonl"
    os.environ["MAME_EVAL_STUDY_TIMINGS"] = str(timings)
    proc = serve(res.path, port=port, address="127.0.0.1", db=db, timeout=180,
                 log=root / "server.log")
    del os.environ["MAME_EVAL_STUDY_TIMINGS"]
    spy = None
    if profile is not None:  # py-spy (pip install py-spy) samples the server while it works
        import subprocess

        spy = subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "--pid",
                                str(proc.pid), "--format", "raw", "--rate", "200", "--gil",
                                "--nonblocking", "-o", str(profile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        min_view = st.protocol.min_view_ms
        if client == "ws":
            tokens = [res.reader_links[r].split("token=")[1] for r in readers]
            lat, stats = asyncio.run(run_ws(port, tokens, n, min_view))
        else:
            lat, stats = asyncio.run(run_chromium([res.reader_links[r] for r in readers], n,
                                                  min_view))
    finally:
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
        if spy is not None:
            import signal

            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
    server_ms = []
    if timings.is_file():
        server_ms = [json.loads(line)["server_ms"] for line in timings.read_text().splitlines()]
    with st.store() as store:
        ratings = store.ratings()
    stored = len(ratings)
    distinct = len({(r.reader, r.case) for r in ratings})
    out = {
        "backend": backend, "client": client, "readers": k, "cases": n, "size_px": size,
        "min_view_ms": st.protocol.min_view_ms, "wall_s": wall,
        "client_ms": _summary(lat), "server_ms": _summary(server_ms),
        "presses_sent": stats["sent"], "acknowledged": stats["acked"], "stored": stored,
        "lost": max(0, stats["acked"] - stored), "duplicated": stored - distinct
        + max(0, stored - stats["sent"]),
        "errors": stats["errors"][:5], "n_errors": len(stats["errors"]),
        "page_arrive_ms": _summary(stats.get("arrive_ms", [])),
        "page_draw_ms": _summary(stats.get("draw_ms", [])),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after], "cpus": os.cpu_count(),
        "latencies_ms": lat,
    }
    shutil.rmtree(root, ignore_errors=True)
    return out


def _fmt(x) -> str:
    return "-" if x is None else f"{x / 1000:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, nargs="+", default=[12, 24])
    ap.add_argument("--backend", nargs="+", default=["sqlite", "postgresql"],
                    choices=["sqlite", "postgresql"])
    ap.add_argument("--client", default="ws", choices=["ws", "chromium"])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--db", default=None, help="PostgreSQL URL (default: a throw-away server)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the K = 1 baseline")
    ap.add_argument("--profile", type=Path, default=None,
                    help="sample the server with py-spy into this collapsed-stack file")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "study_load")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="study-load-"))
    pg = None
    results = []
    try:
        for backend in args.backend:
            db = None
            if backend == "postgresql":
                if args.db:
                    db = args.db
                else:
                    sys.path.insert(0, str(ROOT / "tests"))
                    from pg_server import PostgresServer

                    pg = pg or PostgresServer.start(fsync=True)
            ks = list(args.readers) if args.no_baseline else [1, *args.readers]
            for i, k in enumerate(ks):
                if backend == "postgresql" and not args.db:
                    db = pg.create_database(f"load_{k}_{i}")
                prof = (args.profile.with_name(f"{args.profile.stem}-{backend}-{k}"
                                               f"{args.profile.suffix}")
                        if args.profile else None)
                r = measure(k, args.cases, args.size, backend, args.client, db, work, prof)
                r["baseline"] = (not args.no_baseline) and i == 0
                results.append(r)
                c, s = r["client_ms"], r["server_ms"]
                print(f"{backend:<10} K={k:<3} client median {_fmt(c['median'])} s  p95 "
                      f"{_fmt(c['p95'])} s  max {_fmt(c['max'])} s | server median "
                      f"{_fmt(s['median'])} s  p95 {_fmt(s['p95'])} s  max {_fmt(s['max'])} s"
                      f" | acked {r['acknowledged']} stored {r['stored']} lost {r['lost']} "
                      f"dup {r['duplicated']} errors {r['n_errors']} | load "
                      f"{r['loadavg_before'][0]:.1f}->{r['loadavg_after'][0]:.1f}",
                      flush=True)
                if r["page_draw_ms"]["n"]:
                    a, d = r["page_arrive_ms"], r["page_draw_ms"]
                    print(f"{'':<10} in the page: press -> next case's data median "
                          f"{_fmt(a['median'])} s p95 {_fmt(a['p95'])} s; data -> drawn median "
                          f"{_fmt(d['median'])} s p95 {_fmt(d['p95'])} s", flush=True)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = {r["backend"]: r for r in results if r["baseline"]}
    print("\np95 client latency relative to K = 1 in this run:")
    for r in results:
        b = base.get(r["backend"])
        if b and not r["baseline"] and b["client_ms"]["p95"] and r["client_ms"]["p95"]:
            ratio = r["client_ms"]["p95"] / b["client_ms"]["p95"]
            print(f"  {r['backend']:<10} K={r['readers']:<3} {ratio:.2f}x")
    goal = [r for r in results if r["readers"] == 12]
    for r in goal:
        ok = (r["client_ms"]["p95"] is not None and r["client_ms"]["p95"] <= 1000
              and r["client_ms"]["max"] <= 3000 and r["lost"] == 0 and r["duplicated"] == 0
              and r["n_errors"] == 0)
        print(f"goal K=12 {r['backend']} ({r['client']}): p95 <= 1.0 s, max <= 3 s, 0 lost, "
              f"0 duplicated: {'met' if ok else 'NOT met'}")
    import csv

    with open(args.out / "latencies.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["backend", "client", "readers", "latency_ms"])
        for r in results:
            for x in r["latencies_ms"]:
                w.writerow([r["backend"], r["client"], r["readers"], f"{x:.1f}"])
    for r in results:
        r.pop("latencies_ms")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'results.json'} and latencies.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
