"""End to end in a real browser: Playwright drives Debian's chromium against the study server.

The server is started through the library (``mame_eval.studies.study.serve``: ``python -m
streamlit run … --server.headless true``) on a free localhost port. Marked ``slow``; skipped
only when ``/usr/bin/chromium`` is missing *and* ``$CI`` is unset -- in CI these tests run.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mame_eval.studies.study import create_study, open_study, serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

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


def _pngs(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = (rng.random((64, 48)) * 255).astype(np.uint8)
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
    """Factory: create a study and (re)start its server; everything started is stopped."""
    procs = []

    def start(study_path: Path, port: int):
        proc = serve(study_path, port=port, address="127.0.0.1", timeout=90,
                     log=tmp_path / "server.log")
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _study(tmp_path: Path, n: int, readers: str, port: int):
    real = _pngs(tmp_path / "real", n, 1)
    syn = _pngs(tmp_path / "syn", n, 2)
    return create_study(tmp_path / "study", real, syn, n=n, readers=readers, seed=5,
                        address="127.0.0.1", port=port)


def _wait_progress(page, done: int, total: int, timeout: float = 30_000) -> None:
    """Wait for "done / total" and for the script run that wrote it to finish."""
    page.get_by_text(f"{done} / {total}", exact=True).wait_for(timeout=timeout)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=timeout)


def _wait_case(page, study, case: str) -> None:
    """Wait until the viewer shows exactly this case's image (its bytes, inlined)."""
    src = "data:image/png;base64," + base64.b64encode(
        study.case_path(case).read_bytes()).decode()
    sync_api.expect(page.frame_locator("iframe").locator("#img")).to_have_attribute(
        "src", src, timeout=30_000)


def _rate_click(page, label: str) -> None:
    page.locator(".stButton button", has_text=label).click()


def test_ratings_survive_sigkill_and_the_reader_resumes_at_the_first_unrated_case(
        tmp_path, server, browser):
    n = 8
    port = _free_port()
    res = _study(tmp_path, n, "alice,bob", port)
    link = res.reader_links["alice"]
    study = open_study(res.path)
    with study.store() as store:
        order = store.assignments("alice")

    proc = server(res.path, port)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(link)
    page.get_by_role("button", name="Start").click()
    _wait_progress(page, 0, n)
    _wait_case(page, study, order[0])
    _rate_click(page, "Probably real")
    _wait_progress(page, 1, n)
    _wait_case(page, study, order[1])
    page.keyboard.press("1")  # keys 0-4 work too
    _wait_progress(page, 2, n)
    _wait_case(page, study, order[2])
    page.frame_locator("iframe").locator("#img").click()  # focus inside the viewer
    page.keyboard.press("4")
    _wait_progress(page, 3, n)

    # the server dies without warning; the three ratings were committed before case 4 showed
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with study.store() as store:
        assert [(r.case, r.score) for r in store.ratings("alice")] == [
            (order[0], 3), (order[1], 1), (order[2], 4)]

    server(res.path, port)
    page.close()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(link)  # the reader reopens the link
    _wait_progress(page, 3, n)
    assert page.get_by_role("button", name="Start").count() == 0
    with study.store() as store:
        shown = [e["case"] for e in store.audit("alice") if e["event"] == "shown"]
    assert shown[-1] == order[3]  # continues exactly at the first unrated case
    for i in range(3, n):
        _wait_case(page, study, order[i])
        _rate_click(page, ["Unsure", "Definitely synthetic"][i % 2])
        _wait_progress(page, i + 1, n)
    page.get_by_text(f"All {n} cases are rated").wait_for()
    page.close()

    with study.store() as store:
        ratings = store.ratings("alice")
        assert [r.case for r in ratings] == order  # every case once, in the reader's order
        assert len({r.case for r in ratings}) == n
        assert all(r.duration_s is not None and r.duration_s > 0 for r in ratings)
        assert store.ratings("bob") == []


def test_three_readers_rating_at_the_same_time_are_all_stored(tmp_path, server, browser):
    n = 6
    port = _free_port()
    readers = ["ann", "ben", "cat"]
    res = _study(tmp_path, n, ",".join(readers), port)
    server(res.path, port)
    study = open_study(res.path)
    with study.store() as store:
        orders = {r: store.assignments(r) for r in readers}
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in readers]
    pages = [c.new_page() for c in contexts]
    for page, r in zip(pages, readers, strict=True):
        page.goto(res.reader_links[r])
    for page in pages:
        page.get_by_role("button", name="Start").click()
    for page in pages:
        _wait_progress(page, 0, n)
    labels = ["Definitely real", "Probably synthetic", "Unsure"]
    for i in range(n):
        for page, r in zip(pages, readers, strict=True):
            _wait_case(page, study, orders[r][i])
        for j, page in enumerate(pages):  # three clicks in flight together
            page.locator(".stButton button", has_text=labels[(i + j) % 3]).click(
                no_wait_after=True)
        for page in pages:
            _wait_progress(page, i + 1, n)
    for page in pages:
        page.get_by_text(f"All {n} cases are rated").wait_for()
    for c in contexts:
        c.close()
    with study.store() as store:
        ratings = store.ratings()
        assert len(ratings) == 3 * n
        assert {r.reader for r in ratings} == set(readers)
        for r in readers:
            assert sorted(x.case for x in ratings if x.reader == r) == sorted(store.case_ids())


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
        assert page.locator("img").count() == 0
        assert page.locator("iframe").count() == 0 and len(page.frames) == 1
        assert page.locator(".stButton").count() == 0
        assert "data:image" not in page.content()
    # the coordinator sees progress, no image
    page.goto(res.coordinator_link)
    page.get_by_text("coordinator").first.wait_for()
    page.get_by_text("alice").first.wait_for()
    assert page.locator("iframe").count() == 0 and "data:image" not in page.content()
    page.close()
