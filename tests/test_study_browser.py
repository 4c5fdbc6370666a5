"""End to end in a real browser: Playwright drives Debian's chromium against the study server.

The server is started through the library (``mame_eval.studies.study.serve``: ``python -m
streamlit run … --server.headless true``) on a free localhost port. The viewer exposes its state
machine to tests as ``window.__mameReader`` (state, what is displayed, refused presses). Marked
``slow``; skipped only when ``/usr/bin/chromium`` is missing *and* ``$CI`` is unset -- in CI
these tests run. The durability and concurrency tests run on SQLite and on PostgreSQL.

Set ``MAME_EVAL_SCREENSHOTS=DIR`` to keep the viewer screenshots of
:func:`test_the_viewer_fills_the_screen_and_its_tools_work`.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mame_eval.studies.protocol import default_protocol, dumps_toml
from mame_eval.studies.study import create_study, open_study, reissue_token, serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--disable-background-timer-throttling", "--disable-renderer-backgrounding"]
pytest_plugins = ["pg_server"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                       reason="needs Debian's chromium (apt-get install chromium); "
                       "always runs in CI"),
]

sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else None
if sync_api is None:  # in CI a missing playwright is a failure, not a skip
    import playwright.sync_api as sync_api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pngs(folder: Path, n: int, seed: int, size=(96, 72)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    for i in range(n):
        blob = 140 * np.exp(-((yy - size[0] / 2) ** 2 + (xx - size[1] / 3) ** 2) / 800)
        a = np.clip(blob + rng.normal(60, 25, size), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def server(tmp_path):
    """Factory: (re)start a study's server; everything started is stopped."""
    procs = []

    def start(study_path: Path, port: int, db: str | None = None):
        proc = serve(study_path, port=port, address="127.0.0.1", db=db, timeout=120,
                     log=tmp_path / f"server-{port}.log")
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _study(tmp_path: Path, n: int, readers: str, port: int, db: str | None = None,
           **proto_changes):
    real = _pngs(tmp_path / "real", n, 1)
    syn = _pngs(tmp_path / "syn", n, 2)
    protocol = tmp_path / "protocol.toml"
    protocol.write_text(dumps_toml({**default_protocol().to_dict(), "min_view_ms": 400,
                                    **proto_changes}))
    return create_study(tmp_path / "study", real, syn, n=n, readers=readers, seed=5,
                        address="127.0.0.1", port=port, db=db, protocol=protocol)


# --------------------------------------------------------------------------------------------
# the page, as the tests see it
# --------------------------------------------------------------------------------------------


def _state(page) -> dict:
    return page.evaluate("window.__mameReader.state()")


def _wait_case(page, k: int, timeout: float = 45_000) -> None:
    """Wait until case k (1-based) is displayed and ready to be rated."""
    page.wait_for_function(
        "k => window.__mameReader && window.__mameReader.state && window.__mameReader.data"
        " && window.__mameReader.data.k === k && window.__mameReader.state().state === 'ready'",
        arg=k, timeout=timeout)


def _refused(page) -> list[str]:
    return page.evaluate("window.__mameReader.log.filter(e => e.kind === 'refused')"
                         ".map(e => e.why)")


def _notice(page) -> str:
    return page.locator(".notice").inner_text()


def _start(page, link: str) -> None:
    page.goto(link)
    page.get_by_role("button", name="Start").click()
    _wait_case(page, 1)


def _rate_key(page, key: str, k_next: int | None, min_view_s: float = 0.45) -> None:
    page.wait_for_timeout(int(min_view_s * 1000))
    page.keyboard.press(key)
    if k_next is not None:
        _wait_case(page, k_next)


def _rate_click(page, label: str, k_next: int | None, min_view_s: float = 0.45) -> None:
    page.wait_for_timeout(int(min_view_s * 1000))
    page.locator(".scale button", has_text=label).click()
    if k_next is not None:
        _wait_case(page, k_next)


# --------------------------------------------------------------------------------------------
# durability, restart, concurrency: SQLite and PostgreSQL
# --------------------------------------------------------------------------------------------


def test_ratings_survive_sigkill_and_an_open_page_goes_on_after_the_restart(
        tmp_path, server, browser, db_url):
    n = 6
    port = _free_port()
    res = _study(tmp_path, n, "alice,bob", port, db=db_url)
    link = res.reader_links["alice"]
    study = open_study(res.path, db_url)
    with study.store() as store:
        order = store.assignments("alice")

    proc = server(res.path, port, db_url)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _start(page, link)
    _rate_click(page, "Probably real", 2)
    _rate_key(page, "1", 3)
    page.locator("canvas.img").click()  # focus on the image: keys still rate
    _rate_key(page, "4", 4)

    # the server dies without warning; the three ratings were committed before case 4 showed
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with study.store() as store:
        assert [(r.case, r.score) for r in store.ratings("alice")] == [
            (order[0], 3), (order[1], 1), (order[2], 4)]

    # a press on the open page while the server is down, then the server comes back: the page
    # reconnects and the press is stored (never silently dropped)
    page.wait_for_timeout(450)
    page.keyboard.press("0")
    server(res.path, port, db_url)
    _wait_case(page, 5, timeout=90_000)
    with study.store() as store:
        assert [(r.case, r.score) for r in store.ratings("alice")][-1] == (order[3], 0)

    # the reader closes the tab and reopens the link: it resumes at the first unrated case
    page.close()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(link)
    _wait_case(page, 5)
    assert page.get_by_role("button", name="Start").count() == 0
    _rate_click(page, "Unsure", 6)
    _rate_key(page, "2", None)
    page.get_by_text(f"All {n} cases are rated").wait_for(timeout=45_000)
    page.close()

    with study.store() as store:
        ratings = store.ratings("alice")
        assert [r.case for r in ratings] == order  # every case once, in the reader's order
        assert all(r.duration_s is not None and r.duration_s >= 0.4 for r in ratings)
        assert store.ratings("bob") == []


def test_three_readers_rating_at_the_same_time_are_all_stored(tmp_path, server, browser,
                                                             db_url):
    n = 5
    port = _free_port()
    readers = ["ann", "ben", "cat"]
    res = _study(tmp_path, n, ",".join(readers), port, db=db_url)
    server(res.path, port, db_url)
    study = open_study(res.path, db_url)
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in readers]
    pages = [c.new_page() for c in contexts]
    for page, r in zip(pages, readers, strict=True):
        page.goto(res.reader_links[r])
    for page in pages:
        page.get_by_role("button", name="Start").click()
    keys = ["4", "1", "2"]
    for i in range(n):
        for page in pages:
            _wait_case(page, i + 1)
        pages[0].wait_for_timeout(450)
        for j, page in enumerate(pages):  # three presses in flight together
            page.keyboard.press(keys[(i + j) % 3])
    for page in pages:
        page.get_by_text(f"All {n} cases are rated").wait_for(timeout=45_000)
    for c in contexts:
        c.close()
    with study.store() as store:
        ratings = store.ratings()
        assert len(ratings) == 3 * n
        for r in readers:
            assert sorted(x.case for x in ratings if x.reader == r) == sorted(store.case_ids())


def test_two_servers_share_one_postgres_database(tmp_path, server, browser, pg_url):
    """Two sites: two `study serve` processes on different ports, one PostgreSQL database."""
    n = 4
    port_a, port_b = _free_port(), _free_port()
    readers = ["ann", "ben", "cat", "dan"]
    res = _study(tmp_path, n, ",".join(readers), port_a, db=pg_url)
    server(res.path, port_a, pg_url)
    server(res.path, port_b, pg_url)
    links = {r: res.reader_links[r] if i % 2 == 0 else
             res.reader_links[r].replace(f":{port_a}/", f":{port_b}/")
             for i, r in enumerate(readers)}
    contexts = [browser.new_context() for _ in readers]
    pages = [c.new_page() for c in contexts]
    for page, r in zip(pages, readers, strict=True):
        _start(page, links[r])
    for i in range(n):
        for page in pages:
            _wait_case(page, i + 1)
        pages[0].wait_for_timeout(450)
        for page in pages:
            page.keyboard.press(str(i % 5))
    for page in pages:
        page.get_by_text(f"All {n} cases are rated").wait_for(timeout=45_000)
    study = open_study(res.path, pg_url)
    with study.store() as store:
        ratings = store.ratings()
        assert len(ratings) == len(readers) * n
        assert len({(r.reader, r.case) for r in ratings}) == len(readers) * n
    # the coordinator on either server sees the same, complete progress
    for port in (port_a, port_b):
        page = contexts[0].new_page()
        page.goto(res.coordinator_link.replace(f":{port_a}/", f":{port}/"))
        page.get_by_text("4 readers, 4 finished").wait_for(timeout=45_000)
        page.close()
    for c in contexts:
        c.close()


# --------------------------------------------------------------------------------------------
# reading integrity
# --------------------------------------------------------------------------------------------


def test_one_key_press_is_at_most_one_rating_and_refusals_are_visible(tmp_path, server,
                                                                     browser):
    n = 6
    port = _free_port()
    res = _study(tmp_path, n, "alice", port)
    server(res.path, port)
    study = open_study(res.path)
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    _start(page, res.reader_links["alice"])

    # a rating key held down for 1.5 s (keyboard auto-repeat every 33 ms): exactly one rating
    page.wait_for_timeout(500)
    page.keyboard.down("3")
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:
        page.keyboard.down("3")  # Playwright sends these as auto-repeat (event.repeat)
        page.wait_for_timeout(33)
    saw_held = "Key held down" in _notice(page) or "held" in _refused(page)
    page.keyboard.up("3")
    _wait_case(page, 2)
    with study.store() as store:
        assert [r.score for r in store.ratings("alice")] == [3]
    assert saw_held and _refused(page).count("held") >= 1

    # a key pressed just as the next case appears: acknowledged on screen, never a rating
    page.wait_for_timeout(450)
    page.keyboard.press("1")  # rates case 2
    page.keyboard.press("4")  # at once: case 2 is being saved / case 3 not yet shown long
    page.wait_for_timeout(100)
    assert _refused(page)[-1] in ("busy", "loading", "early")
    assert page.locator(".notice.warn").count() == 1  # said on screen
    _wait_case(page, 3)
    page.keyboard.press("2")  # as soon as case 3 is ready: too early (min_view_ms 400)
    assert _refused(page)[-1] == "early" and "Too early" in _notice(page)
    page.wait_for_timeout(300)
    with study.store() as store:
        assert [r.score for r in store.ratings("alice")] == [3, 1]  # case 3 is not rated
    _rate_key(page, "2", 4)

    # a double click on a rating button: one rating
    page.wait_for_timeout(450)
    page.locator(".scale button", has_text="Definitely real").dblclick()
    _wait_case(page, 5)
    with study.store() as store:
        ratings = store.ratings("alice")
        order = store.assignments("alice")
    assert [(r.case, r.score) for r in ratings] == list(zip(order[:4], [3, 1, 2, 4],
                                                            strict=True))
    # every stored rating came from a press made on that very case, after 0.4 s on screen
    presses = page.evaluate("window.__mameReader.log.filter(e => e.kind === 'press')")
    assert len(presses) == 4 and all(p["shown_ms"] >= 400 for p in presses)
    with study.store() as store:
        events = store.audit("alice")
    rated = [e for e in events if e["event"] == "rated"]
    assert [e["detail"]["via"] for e in rated] == ["key", "key", "key", "click"]
    assert all(e["detail"]["duration_s"] >= 0.4 for e in rated)
    page.close()


def test_a_revoked_link_stops_an_open_page_with_a_clear_message(tmp_path, server, browser):
    port = _free_port()
    res = _study(tmp_path, 4, "alice", port)
    server(res.path, port)
    page = browser.new_page()
    _start(page, res.reader_links["alice"])
    _rate_key(page, "3", 2)
    reissue_token(res.path, "alice")
    _rate_key(page, "1", None)
    page.get_by_text("This link is no longer valid").wait_for(timeout=30_000)
    assert page.locator("canvas.img").count() == 0
    with open_study(res.path).store() as store:
        assert [r.score for r in store.ratings("alice")] == [3]
    page.close()


def test_the_time_limit_survives_reloads_and_going_back(tmp_path, server, browser):
    port = _free_port()
    res = _study(tmp_path, 4, "alice", port, time_limit_s=4, allow_back=True)
    server(res.path, port)
    study = open_study(res.path)
    page = browser.new_page()
    _start(page, res.reader_links["alice"])
    _rate_key(page, "3", 2)
    page.wait_for_timeout(1500)
    page.reload()  # the timer of case 2 does not start again
    _wait_case(page, 2)
    left = int(page.locator(".timer").inner_text().split()[2])
    assert left <= 3
    page.locator(".nav button", has_text="Previous case").click()  # back to case 1 ...
    _wait_case(page, 1)
    page.locator(".nav button", has_text="next unrated").click()  # ... and forth
    _wait_case(page, 2)
    assert int(page.locator(".timer").inner_text().split()[2]) <= left
    page.locator(".timeup").wait_for(state="visible", timeout=10_000)  # the image goes away
    assert _state(page)["timeUp"]
    _rate_key(page, "2", 3, min_view_s=0)
    with study.store() as store:
        r = {x.case: x for x in store.ratings("alice")}[store.assignments("alice")[1]]
    assert r.over_time and r.duration_s > 4
    page.close()


def test_a_wrong_or_missing_token_sees_no_image(tmp_path, server, browser):
    port = _free_port()
    res = _study(tmp_path, 4, "alice", port)
    server(res.path, port)
    page = browser.new_page()
    base = res.reader_links["alice"].split("?")[0]
    for url, message in ((base + "?token=guessed-token", "This link is not valid"),
                         (base, "personal link")):
        page.goto(url)
        page.get_by_text(message).wait_for()
        page.wait_for_timeout(500)  # let any late element arrive
        assert page.locator("img").count() == 0 and page.locator("canvas").count() == 0
        assert page.locator(".stButton").count() == 0
        assert "data:image" not in page.content()
    # the coordinator sees progress, no image
    page.goto(res.coordinator_link)
    page.get_by_text("Coordinator").first.wait_for()
    page.get_by_text("alice").first.wait_for()
    assert page.locator("canvas").count() == 0 and "data:image" not in page.content()
    page.close()


# --------------------------------------------------------------------------------------------
# the viewer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height", "dpr"), [(1366, 768, 1), (1920, 1080, 1),
                                                      (1080, 1920, 2)])
def test_the_viewer_fills_the_screen_and_its_tools_work(tmp_path, server, browser, width,
                                                        height, dpr):
    port = _free_port()
    res = _study(tmp_path, 4, "alice", port)
    server(res.path, port)
    ctx = browser.new_context(viewport={"width": width, "height": height},
                              device_scale_factor=dpr)
    page = ctx.new_page()
    _start(page, res.reader_links["alice"])
    page.wait_for_timeout(300)
    s = _state(page)
    stage = page.locator(".stage").bounding_box()
    root = page.locator(".root").bounding_box()
    # the viewer reaches the bottom of the window (less a small margin); on a portrait
    # monitor the rating panel sits below the image ...
    assert height - 40 <= root["y"] + root["height"] <= height
    assert stage["height"] >= 0.7 * height and stage["width"] >= 0.7 * width
    # ... and at "fit" the whole image is visible, as large as the stage allows
    cw, ch = s["canvas"]
    assert (cw, ch) == (round(s["stage"][0] * dpr), round(s["stage"][1] * dpr))
    assert s["x"] >= -0.5 and s["y"] >= -0.5
    assert s["x"] + s["w"] * s["s"] <= cw + 0.5 and s["y"] + s["h"] * s["s"] <= ch + 0.5
    assert abs(s["w"] * s["s"] - cw) < 1 or abs(s["h"] * s["s"] - ch) < 1
    assert "Case 1 of 4" in page.locator(".count").inner_text()

    # 1:1 is one image pixel per device pixel (HiDPI included)
    page.locator(".tools button", has_text="1:1").click()
    page.wait_for_timeout(100)
    assert _state(page)["s"] == pytest.approx(1.0)
    # zoomed in, pixels are shown as blocks, not smoothed
    for _ in range(9):
        page.keyboard.press("+")
    page.wait_for_timeout(200)
    z = _state(page)
    assert z["s"] > 7
    values = page.evaluate(
        """() => {
          const host = [...document.querySelectorAll('*')].find(e => e.shadowRoot &&
            e.shadowRoot.querySelector('canvas.img'));
          const root = host ? host.shadowRoot : document;
          const c = root.querySelector('canvas.img');
          const g = c.getContext('2d');
          const y = Math.floor(c.height / 2);
          const d = g.getImageData(Math.floor(c.width / 2) - 40, y, 80, 1).data;
          const v = []; for (let i = 0; i < d.length; i += 4) v.push(d[i]);
          return v; }""")
    assert len(values) == 80
    runs = 1 + sum(1 for a, b in zip(values, values[1:], strict=False) if a != b)
    assert runs <= 80 / z["s"] + 2  # constant runs of about s device pixels each

    # window/level, invert and the magnifier
    page.locator(".tools button", has_text="fit").click()
    page.locator(".presets button", has_text="dense tissue").click()
    page.keyboard.press("i")
    page.keyboard.press("m")
    box = page.locator("canvas.img").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
    page.wait_for_timeout(200)
    v = _state(page)
    assert (v["level"], v["window"], v["invert"], v["loupe"]) == (175, 130, True, True)
    assert page.locator("canvas.loupe").is_visible()
    # a right-drag changes window/level
    page.mouse.down(button="right")
    page.mouse.move(box["x"] + box["width"] * 0.45 + 60, box["y"] + box["height"] * 0.5 - 40,
                    steps=5)
    page.mouse.up(button="right")
    v2 = _state(page)
    assert v2["window"] == pytest.approx(190) and v2["level"] == pytest.approx(195)
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
    page.wait_for_timeout(200)
    shots = os.environ.get("MAME_EVAL_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"reader_{width}x{height}@{dpr}x.png"))
    # the instructions open again at any time, and close
    page.locator(".helpbtn").click()
    page.locator(".help.on").wait_for(state="visible")
    assert "Rating scale" in page.locator(".help").inner_text()
    page.keyboard.press("Escape")
    page.locator(".help").wait_for(state="hidden")
    ctx.close()
