"""The reader-study web app (Streamlit): a thin face over :mod:`mame_eval.studies`.

Started by :func:`mame_eval.studies.study.serve` (``mame-eval study serve``), which passes the
study folder in ``$MAME_EVAL_STUDY`` (and a database URL in ``$MAME_EVAL_STUDY_DB``).

* ``/?token=<reader token>`` -- instructions, then one case at a time: the image in a
  zoom/pan viewer (wheel or +/- to zoom, drag to pan, double-click to fit, 1:1 for full
  resolution), the rating scale as buttons (keys 0-9 press them), progress "12 / 53". Each
  rating is committed to the database before the next case is shown; reopening the link (even
  after a server restart) continues at the first unrated case. A completion page at the end.
* ``/?token=<coordinator token>`` -- every reader's progress; no ratings, no truth.
* no token or an unknown one -- a message and nothing else.

The app reads ``study.toml``, ``cases/`` and the database only; it never opens ``key.csv``.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import time

import pandas as pd
import streamlit as st

from mame_eval.errors import MameError
from mame_eval.studies.store import StudyStore, utcnow
from mame_eval.studies.study import ENV_DB, ENV_STUDY, Study, open_study

VIEWER_HEIGHT = 760

_BUTTON_WIDTH = ({"width": "stretch"} if "width" in inspect.signature(st.button).parameters
                 else {"use_container_width": True})

NO_TOKEN_MESSAGE = ("This reader study is opened through a personal link (…/?token=…). Please "
                    "use the link you received from the study coordinator.")
BAD_TOKEN_MESSAGE = ("This link is not valid. Please use the personal link you received from "
                     "the study coordinator, or ask them for a new one.")


@st.cache_resource(show_spinner=False)
def _load_study(path: str, db: str | None) -> Study:
    return open_study(path, db)


def _iframe(markup: str, height: int) -> None:
    if hasattr(st, "iframe"):
        st.iframe(markup, height=height)
    else:  # Streamlit < 1.50
        import streamlit.components.v1 as components

        components.html(markup, height=height)


# --------------------------------------------------------------------------------------------
# the image viewer (HTML + JS inside an iframe of the same origin)
# --------------------------------------------------------------------------------------------

_VIEWER = """<!doctype html><html><head><meta charset="utf-8"><style>
html,body{margin:0;height:100%;background:#000;overflow:hidden;font-family:sans-serif}
#stage{position:absolute;inset:0;cursor:grab;touch-action:none}
#stage.drag{cursor:grabbing}
#img{position:absolute;left:0;top:0;transform-origin:0 0;user-select:none;-webkit-user-drag:none}
#bar{position:absolute;right:8px;top:8px;display:flex;gap:4px;z-index:2}
#bar button{background:#222;color:#eee;border:1px solid #555;border-radius:4px;padding:2px 9px;
 cursor:pointer;font-size:14px}
#info{position:absolute;left:8px;top:8px;color:#bbb;font-size:12px;z-index:2;
 background:rgba(0,0,0,.5);padding:2px 6px;border-radius:4px}
#timeup{display:none;position:absolute;inset:0;color:#eee;align-items:center;
 justify-content:center;font-size:20px}
</style></head><body>
<div id="stage"><img id="img" alt="case image" draggable="false"
 src="data:image/png;base64,__DATA__"></div>
<div id="bar"><button id="zin" title="zoom in (+)">+</button>
<button id="zout" title="zoom out (-)">&minus;</button>
<button id="fit" title="fit to the window (double-click)">fit</button>
<button id="one" title="full resolution, one image pixel per screen pixel">1:1</button></div>
<div id="info"><span id="zoom"></span> <span id="timer"></span></div>
<div id="timeup">Time is up for this case &mdash; please give your rating.</div>
<script>
(function () {
  const IW = __W__, IH = __H__, NONCE = "__NONCE__", LIMIT = __LIMIT__;
  const stage = document.getElementById("stage"), img = document.getElementById("img");
  let s = 1, x = 0, y = 0, drag = null;
  function apply() {
    img.style.transform = "translate(" + x + "px," + y + "px) scale(" + s + ")";
    document.getElementById("zoom").textContent = Math.round(s * 100) + "%";
  }
  function fit() {
    const W = stage.clientWidth, H = stage.clientHeight;
    if (!W || !H) return;
    s = Math.min(W / IW, H / IH); x = (W - IW * s) / 2; y = (H - IH * s) / 2; apply();
  }
  function zoomAt(f, cx, cy) {
    const ns = Math.min(32, Math.max(0.05, s * f));
    x = cx - (cx - x) * ns / s; y = cy - (cy - y) * ns / s; s = ns; apply();
  }
  function mid() { return [stage.clientWidth / 2, stage.clientHeight / 2]; }
  stage.addEventListener("wheel", function (e) {
    e.preventDefault();
    const r = stage.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, {passive: false});
  stage.addEventListener("pointerdown", function (e) {
    drag = [e.clientX - x, e.clientY - y]; stage.setPointerCapture(e.pointerId);
    stage.classList.add("drag");
  });
  stage.addEventListener("pointermove", function (e) {
    if (drag) { x = e.clientX - drag[0]; y = e.clientY - drag[1]; apply(); }
  });
  stage.addEventListener("pointerup", function () { drag = null; stage.classList.remove("drag"); });
  stage.addEventListener("dblclick", fit);
  document.getElementById("zin").onclick = function () { zoomAt(1.25, ...mid()); };
  document.getElementById("zout").onclick = function () { zoomAt(0.8, ...mid()); };
  document.getElementById("fit").onclick = fit;
  document.getElementById("one").onclick = function () { zoomAt(1 / s, ...mid()); };
  img.addEventListener("load", fit);
  window.addEventListener("resize", fit);
  if (img.complete) fit();

  let P = null;
  try {
    P = window.parent;
    if (!P || P === window || !P.document) P = null;
  } catch (e) { P = null; }
  function press(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
    if (e.key === "+" || e.key === "=") { zoomAt(1.25, ...mid()); return; }
    if (e.key === "-") { zoomAt(0.8, ...mid()); return; }
    if (!/^[0-9]$/.test(e.key) || !P) return;
    const b = P.document.querySelector(".st-key-score_" + NONCE + "_" + e.key + " button");
    if (!b || b.disabled) return;
    if (P.__mameKeyDone === NONCE) return;  // one keyboard rating per shown case
    P.__mameKeyDone = NONCE;
    e.preventDefault();
    b.click();
  }
  document.addEventListener("keydown", press);
  if (P) {
    if (P.__mameKeyHandler) P.document.removeEventListener("keydown", P.__mameKeyHandler);
    P.__mameKeyHandler = press;
    P.document.addEventListener("keydown", press);
  }
  if (LIMIT >= 0) {
    const end = Date.now() + LIMIT * 1000, el = document.getElementById("timer");
    let iv = null;
    const tick = function () {
      const left = Math.max(0, Math.ceil((end - Date.now()) / 1000));
      el.textContent = "time left " + left + " s";
      if (left <= 0) {
        stage.style.display = "none";
        document.getElementById("timeup").style.display = "flex";
        if (iv) clearInterval(iv);
      }
    };
    iv = setInterval(tick, 250); tick();
  }
})();
</script></body></html>"""


def viewer_html(png: bytes, width: int, height: int, nonce: str,
                seconds_left: float | None = None) -> str:
    """The viewer page for one case: the PNG inlined, zoom/pan, keys, optional countdown."""
    limit = -1 if seconds_left is None else max(0.0, float(seconds_left))
    return (_VIEWER.replace("__W__", str(int(width))).replace("__H__", str(int(height)))
            .replace("__NONCE__", json.dumps(nonce)[1:-1])
            .replace("__LIMIT__", f"{limit:.3f}")
            .replace("__DATA__", base64.b64encode(png).decode("ascii")))


# --------------------------------------------------------------------------------------------
# callbacks (run before the next script run, i.e. before the next case is shown)
# --------------------------------------------------------------------------------------------


def _flash(kind: str, text: str) -> None:
    st.session_state["flash"] = (kind, text)


def _show_flash() -> None:
    msg = st.session_state.pop("flash", None)
    if msg:
        getattr(st, msg[0])(msg[1])


def _start(store_url: str, reader: str) -> None:
    StudyStore(store_url, shared=True).log("started", reader)
    st.session_state["started"] = True


def _rate(store_url: str, reader: str, case: str, value: int, changing: bool,
          limit: float | None) -> None:
    ss = st.session_state
    store = StudyStore(store_url, shared=True)
    duration = time.time() - ss["shown_t"] if ss.get("shown_case") == case else None
    try:
        if changing:
            store.change_rating(reader, case, value, duration_s=duration)
            ss["review"] = None
        else:
            detail = {"over_time": True} if (limit and duration and duration > limit) else None
            ok = store.record_rating(reader, case, value, shown_at=ss.get("shown_at"),
                                     duration_s=duration, detail=detail)
            if not ok and ss.get("last_rated") != case:
                _flash("info", "This case had already been rated (in another window?); the "
                       "first rating was kept.")
            ss["last_rated"] = case
    except MameError as exc:
        ss["attempt"] = ss.get("attempt", 0) + 1
        _flash("error", f"Your rating was NOT saved ({exc}). Please rate the case again.")


def _go_back(case: str) -> None:
    st.session_state["review"] = case


def _cancel_review() -> None:
    st.session_state["review"] = None


# --------------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------------


def _instructions(study: Study, store: StudyStore, reader: str, total: int) -> None:
    proto = study.protocol
    st.title(proto.title)
    st.markdown(proto.render_instructions(total))
    st.markdown("**Rating scale**")
    st.table(pd.DataFrame({"key": [proto.key_for(p.value) or "" for p in proto.scale],
                           "rating": [p.label for p in proto.scale]}).set_index("key"))
    if proto.time_limit_s:
        st.markdown(f"You have **{proto.time_limit_s:g} seconds** per case.")
    st.button("Start", key="start", type="primary", on_click=_start,
              args=(store.url, reader))


def _completed(study: Study, store: StudyStore, reader: str, total: int) -> None:
    if not st.session_state.get("completed_logged"):
        if not store.has_event("completed", reader):
            store.log("completed", reader, n_cases=total)
        st.session_state["completed_logged"] = True
    st.title(study.protocol.title)
    st.progress(1.0, text=f"{total} / {total}")
    st.success(f"All {total} cases are rated. Thank you! You can close this page.")


def _reader_page(study: Study, store: StudyStore, reader: str) -> None:
    ss = st.session_state
    if ss.get("reader") != reader:  # another link opened in the same browser session
        for k in ("started", "review", "shown_case", "shown_t", "shown_at", "last_rated",
                  "attempt", "completed_logged", "flash"):
            ss.pop(k, None)
        ss["reader"] = reader
    proto = study.protocol
    assigned = store.assignments(reader)
    total = len(assigned)
    rated = store.rated(reader)
    done = len(rated)
    _show_flash()
    if not ss.get("started"):
        if done > 0 or store.has_event("started", reader):
            ss["started"] = True
        else:
            _instructions(study, store, reader, total)
            return
    review = ss.get("review")
    if review is not None and (not proto.allow_back or review not in rated):
        review = ss["review"] = None
    if review is None:
        nxt = store.next_case(reader)
        if nxt is None:
            _completed(study, store, reader, total)
            return
        position, case = nxt
    else:
        case = review
        position = assigned.index(case)
    if ss.get("shown_case") != case:
        store.log("shown", reader, case, position=position)
        ss["shown_case"], ss["shown_t"], ss["shown_at"] = case, time.time(), utcnow()

    st.progress(done / total if total else 0.0, text=f"{done} / {total}")
    left, right = st.columns([4, 1], gap="medium")
    seconds_left = None
    if proto.time_limit_s and review is None:
        seconds_left = proto.time_limit_s - (time.time() - ss["shown_t"])
    nonce = f"{'r' if review is not None else 'c'}{position}a{ss.get('attempt', 0)}"
    with left:
        if seconds_left is not None and seconds_left <= 0:
            st.warning("Time is up for this case: please give your rating.")
        else:
            png = study.case_path(case).read_bytes()
            _iframe(viewer_html(png, int(study.settings["width"]),
                                int(study.settings["height"]), nonce, seconds_left),
                    VIEWER_HEIGHT)
    with right:
        st.markdown(f"**{proto.question}**")
        if review is not None:
            st.info(f"You rated this case **{rated[case]}** ({proto.label(rated[case])}). "
                    "Choose a rating to change it.")
        current = rated.get(case) if review is not None else None
        for p in proto.scale:
            key = proto.key_for(p.value)
            label = f"{key} · {p.label}" if key is not None else p.label
            st.button(label, key=f"score_{nonce}_{p.value}",
                      type="primary" if current == p.value else "secondary",
                      on_click=_rate,
                      args=(store.url, reader, case, p.value, review is not None,
                            proto.time_limit_s),
                      **_BUTTON_WIDTH)
        keys = [k for k in (proto.key_for(v) for v in proto.values) if k is not None]
        hint = f"Keys {keys[0]}-{keys[-1]} choose a rating; " if keys else ""
        st.caption(hint + "+ / - zoom, drag to pan, double-click to fit, 1:1 full resolution.")
        if proto.allow_back:
            if review is not None:
                st.button("Back to the next unrated case", key="cancel_review",
                          on_click=_cancel_review)
            elif position > 0 and assigned[position - 1] in rated:
                st.button("← Previous case", key="go_back", on_click=_go_back,
                          args=(assigned[position - 1],))


def _coordinator_page(study: Study, store: StudyStore) -> None:
    st.title(f"Coordinator: {study.protocol.title}")
    rows = []
    for p in store.progress():
        state = "finished" if p.finished else ("reading" if p.started else "not started")
        rows.append({"reader": p.reader, "rated": p.done, "cases": p.total,
                     "progress": f"{(100 * p.done / p.total) if p.total else 0:.0f}%",
                     "state": state,
                     "last activity (UTC)": (p.last_activity or "never")[:19].replace("T", " ")})
    df = pd.DataFrame(rows)
    n_done = sum(r["state"] == "finished" for r in rows)
    st.markdown(f"{len(rows)} readers, {n_done} finished. Ratings and the answer key are not "
                "shown here; run `mame-eval study analyze` when everyone has finished.")
    st.table(df.set_index("reader") if not df.empty else df)
    st.button("Refresh", key="refresh")


def main() -> None:
    st.set_page_config(page_title="Reader study", layout="wide",
                       initial_sidebar_state="collapsed")
    path = os.environ.get(ENV_STUDY)
    if not path:
        st.error(f"No study to serve: start the app with `mame-eval study serve` (${ENV_STUDY} "
                 "is not set).")
        return
    try:
        study = _load_study(path, os.environ.get(ENV_DB) or None)
    except MameError as exc:
        st.error(f"The study cannot be opened: {exc}")
        return
    store = study.store(shared=True)
    token = st.query_params.get("token")
    if not token:
        st.info(NO_TOKEN_MESSAGE)
        return
    reader = store.reader_for_token(token)
    if reader is not None:
        _reader_page(study, store, reader)
    elif store.is_coordinator(token):
        _coordinator_page(study, store)
    else:
        if not st.session_state.get("bad_token_logged"):
            store.log("bad_token")
            st.session_state["bad_token_logged"] = True
        st.error(BAD_TOKEN_MESSAGE)


if __name__ == "__main__":
    main()
