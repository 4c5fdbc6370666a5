"""Page logic of the Streamlit reader app, through Streamlit's AppTest (no browser).

A new AppTest instance is a new browser session: that is how closing the tab and coming back
(or a server restart) is simulated here; the real restart is in test_study_browser.py.
"""

from __future__ import annotations

import base64
import re
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from mame_eval.studies.protocol import default_protocol, dumps_toml
from mame_eval.studies.study import APP_PATH, ENV_STUDY, create_study, open_study

N = 6


def _pngs(folder: Path, n: int, seed: int, size=(20, 16)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = (rng.random(size) * 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"img{i}.png")
    return folder


def _make(tmp_path: Path, name="st", readers="alice,bob", **proto_changes):
    real = _pngs(tmp_path / f"{name}_real", 4, 1)
    syn = _pngs(tmp_path / f"{name}_syn", 4, 2, size=(30, 24))
    protocol = None
    if proto_changes:
        data = {**default_protocol().to_dict(), **proto_changes}
        protocol = tmp_path / f"{name}.toml"
        protocol.write_text(dumps_toml(data))
    res = create_study(tmp_path / name, real, syn, n=N, readers=readers, seed=3,
                       protocol=protocol)
    return res


def _token(link: str) -> str:
    return link.split("token=")[1]


def _app(monkeypatch, study_path: Path, token: str | None) -> AppTest:
    monkeypatch.setenv(ENV_STUDY, str(study_path))
    at = AppTest.from_file(str(APP_PATH), default_timeout=30)
    if token is not None:
        at.query_params["token"] = token
    return at.run()


def _texts(at: AppTest) -> list[str]:
    out = []
    for kind in ("title", "markdown", "caption", "info", "error", "warning", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [p.proto.text for p in at.get("progress")]
    return out


def _progress(at: AppTest) -> str | None:
    bars = at.get("progress")
    return bars[0].proto.text if bars else None


def _served_png(at: AppTest) -> bytes | None:
    frames = at.get("iframe")
    if not frames:
        return None
    m = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", frames[0].proto.srcdoc)
    return base64.b64decode(m.group(1))


def _rate(at: AppTest, value: int) -> AppTest:
    button = next(b for b in at.button if b.label.startswith(f"{value} ·"))
    return button.click().run()


def _nothing_but(at: AppTest, message: str) -> None:
    assert not at.exception
    assert len(at.button) == 0 and not at.get("iframe") and not at.get("imgs")
    assert not at.table and not at.get("progress")
    texts = _texts(at)
    assert len(texts) == 1 and message in texts[0]


def test_no_token_and_wrong_token_show_a_message_and_nothing_else(tmp_path, monkeypatch):
    res = _make(tmp_path)
    _nothing_but(_app(monkeypatch, res.path, None), "personal link")
    at = _app(monkeypatch, res.path, "not-a-token")
    _nothing_but(at, "This link is not valid")
    at.run()  # a rerun of the same session logs the attempt once
    with open_study(res.path).store() as store:
        assert [e["event"] for e in store.audit()].count("bad_token") == 1


def test_reader_flow_instructions_rate_resume_complete(tmp_path, monkeypatch):
    res = _make(tmp_path)
    study = open_study(res.path)
    with study.store() as store:
        order = store.assignments("alice")
    tok = _token(res.reader_links["alice"])

    at = _app(monkeypatch, res.path, tok)
    assert at.title[0].value == "Real or synthetic mammogram?"
    assert any(f"{N} mammograms" in t for t in _texts(at))
    assert [b.label for b in at.button] == ["Start"] and not at.get("iframe")

    at = at.button(key="start").click().run()
    assert _progress(at) == f"0 / {N}"
    assert [b.label for b in at.button] == [
        "0 · Definitely synthetic", "1 · Probably synthetic", "2 · Unsure",
        "3 · Probably real", "4 · Definitely real"]
    assert _served_png(at) == study.case_path(order[0]).read_bytes()
    served = [at.get("iframe")[0].proto.srcdoc]

    time.sleep(0.05)
    at = _rate(at, 3)
    assert _progress(at) == f"1 / {N}"
    assert _served_png(at) == study.case_path(order[1]).read_bytes()
    served.append(at.get("iframe")[0].proto.srcdoc)
    with study.store() as store:
        (r,) = store.ratings("alice")
        assert (r.case, r.score, r.source) == (order[0], 3, "app")
        assert r.duration_s >= 0.05 and r.shown_at < r.rated_at

    # closing the tab / a restart: a new session resumes at the first unrated case
    at = _app(monkeypatch, res.path, tok)
    assert not any(b.label == "Start" for b in at.button)
    assert _progress(at) == f"1 / {N}"
    assert _served_png(at) == study.case_path(order[1]).read_bytes()
    for i in range(1, N):
        served.append(at.get("iframe")[0].proto.srcdoc)
        # nothing on the page names the case or its source
        assert not any(order[i] in t for t in _texts(at))
        assert order[i] not in served[-1]
        at = _rate(at, i % 5)
    assert any(f"All {N} cases are rated" in t for t in _texts(at))
    assert not at.get("iframe") and len(at.button) == 0
    # real and synthetic cases are served in pages of identical length (same-size PNGs)
    assert len({len(s) for s in served}) == 1
    with study.store() as store:
        assert [r.case for r in store.ratings("alice")] == order
        events = [e["event"] for e in store.audit("alice")]
    assert events[0] == "started" and events[-1] == "completed"
    assert events.count("rated") == N and events.count("shown") == N + 1  # +1: the resume


def test_coordinator_sees_progress_but_no_ratings_or_truth(tmp_path, monkeypatch):
    res = _make(tmp_path)
    at = _app(monkeypatch, res.path, _token(res.reader_links["bob"]))
    at = at.button(key="start").click().run()
    at = _rate(_rate(at, 4), 0)
    at = _app(monkeypatch, res.path, _token(res.coordinator_link))
    assert not at.exception and not at.get("iframe")
    table = at.table[0].value
    assert list(table.index) == ["alice", "bob"]
    assert list(table.columns) == ["rated", "cases", "progress", "state",
                                   "last activity (UTC)"]
    assert table.loc["bob", "rated"] == 2 and table.loc["alice", "state"] == "not started"
    study = open_study(res.path)
    with study.store() as store:
        cases = store.case_ids()
    page = " ".join(_texts(at)) + table.to_string()
    assert not any(c in page for c in cases)
    assert "Definitely" not in page and "truth" not in page.lower().replace("answer key", "")


def test_the_app_never_opens_the_key(tmp_path, monkeypatch):
    res = _make(tmp_path)
    opened: list[str] = []
    recording = [True]

    def hook(event, args):
        if recording[0] and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # cannot be removed: switched off below
    at = _app(monkeypatch, res.path, _token(res.reader_links["alice"]))
    at = at.button(key="start").click().run()
    for _ in range(N):
        at = _rate(at, 2)
    _app(monkeypatch, res.path, _token(res.coordinator_link))
    _app(monkeypatch, res.path, "bad")
    recording[0] = False
    hook_seen = list(opened)
    assert any(p.endswith(".png") for p in hook_seen)  # the hook did see the case reads
    assert not any(p.endswith("key.csv") for p in hook_seen)


def test_two_windows_rating_the_same_case_keep_exactly_one_rating(tmp_path, monkeypatch):
    res = _make(tmp_path)
    tok = _token(res.reader_links["alice"])
    a = _app(monkeypatch, res.path, tok)
    a = a.button(key="start").click().run()
    b = _app(monkeypatch, res.path, tok)  # the same reader in a second tab, same case shown
    assert _served_png(a) == _served_png(b)
    a = _rate(a, 1)
    b = _rate(b, 4)
    assert any("already been rated" in t for t in _texts(b))
    with open_study(res.path).store() as store:
        ratings = store.ratings("alice")
        assert [r.score for r in ratings] == [1]
        assert [e["event"] for e in store.audit("alice")].count("duplicate") == 1
    assert _progress(a) == _progress(b) == f"1 / {N}"


def test_going_back_when_the_protocol_allows_it_is_audited(tmp_path, monkeypatch):
    res = _make(tmp_path, name="back", allow_back=True)
    study = open_study(res.path)
    with study.store() as store:
        order = store.assignments("alice")
    at = _app(monkeypatch, res.path, _token(res.reader_links["alice"]))
    at = at.button(key="start").click().run()
    assert not any(b.key == "go_back" for b in at.button)
    at = _rate(at, 1)
    at = at.button(key="go_back").click().run()
    assert _served_png(at) == study.case_path(order[0]).read_bytes()
    assert any("You rated this case **1**" in t for t in _texts(at))
    at = _rate(at, 4)
    assert _served_png(at) == study.case_path(order[1]).read_bytes()
    with study.store() as store:
        (r,) = store.ratings("alice")
        assert (r.case, r.score, r.changes) == (order[0], 4, 1)
        changed = [e for e in store.audit("alice") if e["event"] == "changed"]
        assert changed[0]["detail"]["old"] == 1 and changed[0]["detail"]["new"] == 4


def test_no_going_back_with_the_papers_protocol(tmp_path, monkeypatch):
    res = _make(tmp_path)
    at = _app(monkeypatch, res.path, _token(res.reader_links["alice"]))
    at = _rate(at.button(key="start").click().run(), 2)
    assert not any(b.key in ("go_back", "cancel_review") for b in at.button)


def test_time_limit_hides_the_image_and_flags_late_ratings(tmp_path, monkeypatch):
    res = _make(tmp_path, name="timed", time_limit_s=0.2)
    at = _app(monkeypatch, res.path, _token(res.reader_links["alice"]))
    assert any("0.2 seconds" in t for t in _texts(at))
    at = at.button(key="start").click().run()
    left = re.search(r"LIMIT = ([0-9.]+)", at.get("iframe")[0].proto.srcdoc)
    assert 0 < float(left.group(1)) <= 0.2  # the viewer counts down the seconds left
    time.sleep(0.3)
    at.run()
    assert not at.get("iframe") and any("Time is up" in t for t in _texts(at))
    at = _rate(at, 2)
    with open_study(res.path).store() as store:
        rated = [e for e in store.audit("alice") if e["event"] == "rated"]
    assert rated[0]["detail"]["over_time"] is True
