"""Page logic of the Streamlit reader app, through Streamlit's AppTest (no browser).

A new AppTest instance is a new browser session: that is how closing the tab and coming back,
or a server restart, is simulated here; the real restart is in test_study_browser.py. AppTest
cannot run the viewer's JavaScript, so a press is sent as the viewer sends it: the component's
trigger ("rate"/"nav" with the view it was made on) in the next run's widget states.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.testing.v1 import AppTest

from mame_eval.studies.protocol import default_protocol, dumps_toml
from mame_eval.studies.study import APP_PATH, ENV_STUDY, create_study, open_study, reissue_token

N = 6


class Clock:
    """The server's clock (``StudyStore.clock``), moved by hand: AppTest runs the app in this
    process, so "shown for 0.05 s" is exact however slow the machine is."""

    t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t

    def tick(self, dt: float) -> None:
        self.t += dt


CLOCK = Clock()


@pytest.fixture(autouse=True)
def server_clock(monkeypatch):
    from mame_eval.studies.store import StudyStore

    monkeypatch.setattr(StudyStore, "clock", staticmethod(CLOCK))
    return CLOCK


def _pngs(folder: Path, n: int, seed: int, size=(20, 16)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = (rng.random(size) * 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"img{i}.png")
    return folder


def _make(tmp_path: Path, name="st", readers="alice,bob", **proto_changes):
    real = _pngs(tmp_path / f"{name}_real", 4, 1)
    syn = _pngs(tmp_path / f"{name}_syn", 4, 2)
    data = {**default_protocol().to_dict(), "min_view_ms": 100, **proto_changes}
    protocol = tmp_path / f"{name}.toml"
    protocol.write_text(dumps_toml(data))
    return create_study(tmp_path / name, real, syn, n=N, readers=readers, seed=3,
                        protocol=protocol)


def _token(link: str) -> str:
    return link.split("token=")[1]


def _app(monkeypatch, study_path: Path, token: str | None, run: bool = True) -> AppTest:
    monkeypatch.setenv(ENV_STUDY, str(study_path))
    at = AppTest.from_file(str(APP_PATH), default_timeout=30)
    if token is not None:
        at.query_params["token"] = token
    return at.run() if run else at


def _texts(at: AppTest) -> list[str]:
    out = []
    for kind in ("title", "markdown", "caption", "info", "error", "warning", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [p.proto.text for p in at.get("progress")]
    return out


def _viewer(at: AppTest):
    els = at.get("bidi_component")
    return els[0] if els else None


def _data(at: AppTest) -> dict | None:
    el = _viewer(at)
    if el is None:
        return None
    proto = el.proto
    raw = proto.json if proto.WhichOneof("data") == "json" else proto.mixed.json
    return json.loads(raw)


def _served_png(at: AppTest) -> bytes | None:
    d = _data(at)
    if not d or not d["image"]:
        return None
    return base64.b64decode(d["image"].split(",", 1)[1])


_PRESS = [0]


def _press(at: AppTest, score: int | None = None, event: str = "rate", view: str | None = None,
           **extra) -> AppTest:
    """Send what the viewer sends on a key press / click: a trigger on the component."""
    from streamlit.components.v2.bidi_component.main import _make_trigger_id

    d = _data(at)
    comp_id = _viewer(at).proto.id
    _PRESS[0] += 1
    payload = {"view": view or d["view"], "episode": d["episode"], "press": f"p{_PRESS[0]}",
               **extra}
    if score is not None:
        payload["score"] = score
    ws = WidgetStates()
    ws.CopyFrom(at._tree.get_widget_states())
    w = ws.widgets.add()
    w.id = _make_trigger_id(comp_id, "events")
    w.json_trigger_value = json.dumps([{"event": event, "value": payload}])
    return at._run(widget_state=ws)  # AppTest's own runner, with the component's trigger


def _rate(at: AppTest, score: int) -> AppTest:
    CLOCK.tick(0.2)  # longer than the protocol's minimum viewing time (100 ms here)
    return _press(at, score, via="key")


def _nothing_but(at: AppTest, message: str) -> None:
    assert not at.exception
    assert len(at.button) == 0 and _viewer(at) is None and not at.get("imgs")
    assert not at.table and not at.get("progress")
    texts = _texts(at)
    assert len(texts) == 1 and message in texts[0]


def test_no_token_and_wrong_tokens_show_a_message_and_write_a_bounded_audit(tmp_path,
                                                                            monkeypatch):
    st.cache_resource.clear()  # a fresh server process
    res = _make(tmp_path)
    _nothing_but(_app(monkeypatch, res.path, None), "personal link")
    at = _app(monkeypatch, res.path, "not-a-token")
    _nothing_but(at, "This link is not valid")
    at.run()  # a rerun of the same session logs nothing more
    for i in range(30):  # thirty guessed links, each a new session, within a minute
        _nothing_but(_app(monkeypatch, res.path, f"guess-{i}"), "This link is not valid")
    with open_study(res.path).store() as store:
        rows = [e for e in store.audit() if e["event"] == "bad_token"]
    assert len(rows) == 1 and rows[0]["detail"]["count"] == 1


def test_reader_flow_instructions_rate_resume_complete(tmp_path, monkeypatch):
    res = _make(tmp_path)
    study = open_study(res.path)
    with study.store() as store:
        order = store.assignments("alice")
    tok = _token(res.reader_links["alice"])

    at = _app(monkeypatch, res.path, tok)
    assert at.title[0].value == "Real or synthetic mammogram?"
    assert any(f"{N} mammograms" in t for t in _texts(at))
    assert [b.label for b in at.button] == ["Start"] and _viewer(at) is None

    at = at.button(key="start").click().run()
    d = _data(at)
    assert (d["k"], d["n"], d["done"], d["mode"]) == (1, N, 0, "rate")
    assert [(p["value"], p["key"], p["label"]) for p in d["scale"]][:2] == [
        (0, "0", "Definitely synthetic"), (1, "1", "Probably synthetic")]
    assert d["min_view_ms"] == 100 and d["seconds_left"] is None
    assert _served_png(at) == study.case_path(order[0]).read_bytes()
    assert order[0] not in json.dumps(d)  # the page never names the case
    # the instructions stay available on the case page, inside the viewer's panel
    assert f"<strong>{N} mammograms</strong>" in d["help"] and "Rating scale" in d["help"]
    assert "<script" not in d["help"] and d["title"] == "Real or synthetic mammogram?"

    at = _press(at, 3)  # at once: shorter than the minimum viewing time, refused with a notice
    d = _data(at)
    assert d["k"] == 1 and d["notice"]["kind"] == "warn" and "Not stored" in d["notice"]["text"]
    assert d["ack"] == f"p{_PRESS[0]}"  # the page learns its press was answered
    at = _rate(at, 3)
    d = _data(at)
    assert (d["k"], d["done"]) == (2, 1)
    assert _served_png(at) == study.case_path(order[1]).read_bytes()
    with study.store() as store:
        (r,) = store.ratings("alice")
        assert (r.case, r.score, r.source) == (order[0], 3, "app")
        assert r.duration_s == pytest.approx(0.2) and r.shown_at < r.rated_at

    # closing the tab / a restart: a new session resumes at the first unrated case
    at = _app(monkeypatch, res.path, tok)
    assert not any(b.label == "Start" for b in at.button)
    assert _data(at)["k"] == 2 and _served_png(at) == study.case_path(order[1]).read_bytes()
    served = []
    for i in range(1, N):
        d = _data(at)
        served.append(d["image"])
        assert d["k"] == i + 1 and order[i] not in json.dumps(d)
        at = _rate(at, i % 5)
    assert any(f"All {N} cases are rated" in t for t in _texts(at))
    assert _viewer(at) is None and len(at.button) == 0
    # real and synthetic cases are served as data of identical length (same-size PNGs)
    assert len({len(s) for s in served}) == 1
    with study.store() as store:
        assert [r.case for r in store.ratings("alice")] == order
        events = [e["event"] for e in store.audit("alice")]
    assert events[0] == "started" and events[-1] == "completed"
    assert events.count("rated") == N and events.count("shown") == N  # a resume is no display


def test_a_press_reaching_a_new_session_is_stored(tmp_path, monkeypatch):
    """After a server restart the open page's next press arrives in a session that has never
    run the page: it is stored and the next case shown (not dropped)."""
    res = _make(tmp_path)
    tok = _token(res.reader_links["alice"])
    at = _app(monkeypatch, res.path, tok)
    at = at.button(key="start").click().run()
    d = _data(at)
    CLOCK.tick(0.2)
    fresh = _app(monkeypatch, res.path, tok, run=False)
    fresh._tree = at._tree  # the old page, as the browser still shows it
    fresh = _press(fresh, 4, view=d["view"])
    assert not fresh.exception and _data(fresh)["k"] == 2
    with open_study(res.path).store() as store:
        assert [(r.score, r.source) for r in store.ratings("alice")] == [(4, "app")]


def test_a_revoked_link_stops_an_open_page_at_its_next_press(tmp_path, monkeypatch):
    res = _make(tmp_path)
    at = _app(monkeypatch, res.path, _token(res.reader_links["bob"]))
    at = _rate(at.button(key="start").click().run(), 1)
    reissue_token(res.path, "bob")
    at = _rate(at, 2)
    assert _viewer(at) is None and any("no longer valid" in t for t in _texts(at))
    with open_study(res.path).store() as store:
        assert [r.score for r in store.ratings("bob")] == [1]
    at.run()  # and it stays stopped
    assert _viewer(at) is None and any("no longer valid" in t for t in _texts(at))


def test_coordinator_sees_progress_but_no_ratings_or_truth(tmp_path, monkeypatch):
    res = _make(tmp_path, time_limit_s=60)
    at = _app(monkeypatch, res.path, _token(res.reader_links["bob"]))
    at = at.button(key="start").click().run()
    at = _rate(_rate(at, 4), 0)
    at = _app(monkeypatch, res.path, _token(res.coordinator_link))
    assert not at.exception and _viewer(at) is None
    table = at.table[0].value
    assert list(table.index) == ["alice", "bob"]
    assert list(table.columns) == ["rated", "cases", "progress", "state", "median s/case",
                                   "over time", "last activity (UTC)"]
    assert table.loc["bob", "rated"] == 2 and table.loc["alice", "state"] == "not started"
    assert table.loc["bob", "median s/case"] == "0.2" and table.loc["bob", "over time"] == 0
    assert any("refreshed every 5 s" in t for t in _texts(at))
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
    assert "already been rated" in _data(b)["notice"]["text"]
    with open_study(res.path).store() as store:
        ratings = store.ratings("alice")
        assert [r.score for r in ratings] == [1]
        assert [e["event"] for e in store.audit("alice")].count("duplicate") == 1
    assert _data(a)["k"] == _data(b)["k"] == 2


def test_going_back_when_the_protocol_allows_it_keeps_the_history(tmp_path, monkeypatch):
    res = _make(tmp_path, name="back", allow_back=True)
    study = open_study(res.path)
    with study.store() as store:
        order = store.assignments("alice")
    at = _app(monkeypatch, res.path, _token(res.reader_links["alice"]))
    at = at.button(key="start").click().run()
    assert _data(at)["back"] is False
    at = _rate(at, 1)
    assert _data(at)["back"] is True
    at = _press(at, event="nav", to="back")
    d = _data(at)
    assert (d["mode"], d["current"], d["k"]) == ("review", 1, 1)
    assert _served_png(at) == study.case_path(order[0]).read_bytes()
    at = _rate(at, 4)
    d = _data(at)
    assert d["mode"] == "rate" and d["k"] == 2 and "changed from 1" in d["notice"]["text"]
    with study.store() as store:
        (r,) = store.ratings("alice")
        assert (r.case, r.first_score, r.score, r.changes) == (order[0], 1, 4, 1)
        changed = [e for e in store.audit("alice") if e["event"] == "changed"]
        assert changed[0]["detail"]["old"] == 1 and changed[0]["detail"]["new"] == 4


def test_no_going_back_with_the_papers_protocol(tmp_path, monkeypatch):
    res = _make(tmp_path)
    at = _app(monkeypatch, res.path, _token(res.reader_links["alice"]))
    at = _rate(at.button(key="start").click().run(), 2)
    assert _data(at)["back"] is False
    at = _press(at, event="nav", to="back")
    assert _data(at)["mode"] == "rate" and _data(at)["k"] == 2


def test_the_time_limit_counts_from_the_first_display_across_reloads(tmp_path, monkeypatch):
    res = _make(tmp_path, name="timed", time_limit_s=0.6)
    tok = _token(res.reader_links["alice"])
    at = _app(monkeypatch, res.path, tok)
    assert any("0.6 seconds" in t for t in _texts(at))
    at = at.button(key="start").click().run()
    first = _data(at)["seconds_left"]
    assert first == pytest.approx(0.6)
    CLOCK.tick(0.3)
    again = _data(_app(monkeypatch, res.path, tok))["seconds_left"]  # a reload
    assert again == pytest.approx(0.3)  # the clock did not restart
    CLOCK.tick(0.4)
    at = _app(monkeypatch, res.path, tok)  # and again, past the limit: no image any more
    d = _data(at)
    assert d["image"] is None and d["seconds_left"] == 0
    at = _press(at, 2)
    assert "after the time limit" in _data(at)["notice"]["text"]
    with open_study(res.path).store() as store:
        (r,) = store.ratings("alice")
        assert r.over_time and r.duration_s == pytest.approx(0.7)
        rated = [e for e in store.audit("alice") if e["event"] == "rated"]
    assert rated[0]["detail"]["over_time"] is True


def test_instructions_markdown_is_rendered_safely():
    from mame_eval.studies.viewer import instructions_html

    out = instructions_html("You will see **3 cases**.\n\n* **0** synthetic,\n  wrapped\n"
                            "* 4 real\n\n<script>alert(1)</script> `code`")
    assert out == ("<p>You will see <strong>3 cases</strong>.</p><ul><li><strong>0</strong> "
                   "synthetic, wrapped</li><li>4 real</li></ul><p>&lt;script&gt;alert(1)"
                   "&lt;/script&gt; <code>code</code></p>")
