"""The reader-study web app (Streamlit): a thin face over :mod:`mame_eval.studies`.

Started by :func:`mame_eval.studies.study.serve` (``mame-eval study serve``), which passes the
study folder in ``$MAME_EVAL_STUDY`` (and a database URL in ``$MAME_EVAL_STUDY_DB``).

* ``/?token=<reader token>`` -- instructions, then one case at a time in a diagnostic viewer
  (window/level with presets, invert, magnifier, zoom to pixels, fit, 1:1 on HiDPI screens;
  :mod:`mame_eval.studies.viewer`) next to the rating scale (keys 0-9 or clicks), "Case k of
  n", the instructions reopenable at any time, a completion page. What may be stored is decided
  by :mod:`mame_eval.studies.reading`: one press at most one rating, only for the case on
  screen, after the protocol's minimum viewing time, with a valid token; time measured by the
  server. A press that cannot be taken is acknowledged on the page.
* ``/?token=<coordinator token>`` -- per-reader progress, median time per case and over-time
  counts, refreshing by itself; never scores or truth.
* no token or an unknown one -- a message and nothing else.

The app reads ``study.toml``, ``cases/``, ``blinding_audit.csv`` and the database only; it never
opens ``key.csv``. After a server restart an open page reconnects: its next press reaches a new
session, which stores it (the press carries everything needed) and shows the next case.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections import deque

import pandas as pd
import streamlit as st

from mame_eval.errors import MameError
from mame_eval.studies.reading import current_screen, submit_rating
from mame_eval.studies.store import StudyStore
from mame_eval.studies.study import ENV_DB, ENV_STUDY, Study, open_study
from mame_eval.studies.viewer import case_data_url, instructions_html, viewer

VIEWER_KEY = "reader_viewer"
#: benchmarks set this to a file: one JSON line per handled press (server-side timing)
ENV_TIMINGS = "MAME_EVAL_STUDY_TIMINGS"
BAD_TOKEN_LOG_INTERVAL_S = 60.0

NO_TOKEN_MESSAGE = ("This reader study is opened through a personal link (…/?token=…). Please "
                    "use the link you received from the study coordinator.")
BAD_TOKEN_MESSAGE = ("This link is not valid. Please use the personal link you received from "
                     "the study coordinator, or ask them for a new one.")
REVOKED_MESSAGE = ("This link is no longer valid: the study coordinator has issued you a new "
                   "one. Every rating you gave before is stored; please continue with your new "
                   "link.")

_PAGE_CSS = """<style>
header[data-testid="stHeader"] { display: none; }
[data-testid="stMainBlockContainer"], .block-container {
  padding: 0.6rem 1rem 0 1rem !important; max-width: 100% !important; }
[data-testid="stToolbar"] { display: none; }
</style>"""


@st.cache_resource(show_spinner=False)
def _load_study(path: str, db: str | None) -> Study:
    return open_study(path, db)


@st.cache_resource(show_spinner=False)
def _bad_token_counter() -> dict:
    """Per server process: bad-token page loads are logged at most once a minute, with a
    count, so that guessing links cannot fill the audit log."""
    return {"lock": threading.Lock(), "last": 0.0, "pending": 0}


def _log_bad_token(store: StudyStore) -> None:
    c = _bad_token_counter()
    with c["lock"]:
        c["pending"] += 1
        now = time.monotonic()
        if c["last"] and now - c["last"] < BAD_TOKEN_LOG_INTERVAL_S:
            return
        count, c["pending"], c["last"] = c["pending"], 0, now
    store.log("bad_token", count=count)


# --------------------------------------------------------------------------------------------
# presses: handled in the component's callback (before the script run that shows the result)
# or, in a session that does not know the component yet (after a server restart), inline
# --------------------------------------------------------------------------------------------


def _notice(kind: str, text: str) -> None:
    ss = st.session_state
    ss["notice_n"] = ss.get("notice_n", 0) + 1
    ss["notice"] = {"id": ss["notice_n"], "kind": kind, "text": text}


def _handle(event: str, payload) -> bool:
    """Act on one press; True when it was new (not handled before in this session)."""
    ss = st.session_state
    if not isinstance(payload, dict):
        return False
    press = str(payload.get("press", ""))
    handled = ss.setdefault("handled", deque(maxlen=64))
    if press in handled:
        return False
    handled.append(press)
    ss["ack"] = press
    ss["press_t0"] = time.perf_counter()
    study = _load_study(os.environ[ENV_STUDY], os.environ.get(ENV_DB) or None)
    store = study.store(shared=True)
    token = st.query_params.get("token") or ""
    reader = store.reader_for_token(token)
    if reader is None:
        ss["revoked"] = True
        return True
    if event == "nav":
        to = payload.get("to")
        if to == "next":
            ss["review"] = None
        elif to == "back" and study.protocol.allow_back:
            assigned = store.assignments(reader)
            rated = store.rated(reader)
            cur = ss.get("review")
            pos = assigned.index(cur) if cur in assigned else next(
                (i for i, c in enumerate(assigned) if c not in rated), len(assigned))
            if pos > 0 and assigned[pos - 1] in rated:
                ss["review"] = assigned[pos - 1]
        return True
    out = submit_rating(store, study.protocol, reader, token, payload, ss.get("review"))
    if out.kind == "revoked":
        ss["revoked"] = True
    elif out.message:
        _notice(out.kind, out.message)
    if out.leave_review:
        ss["review"] = None
    return True


def _on_event(event: str) -> None:
    result = st.session_state.get(VIEWER_KEY)
    payload = result.get(event) if result is not None else None
    _handle(event, payload)


def _record_timing(reader: str, k: int) -> None:
    t0 = st.session_state.pop("press_t0", None)
    path = os.environ.get(ENV_TIMINGS)
    if t0 is None or not path:
        return
    line = json.dumps({"reader": reader, "k": k, "server_ms": 1000 * (time.perf_counter() - t0),
                       "t": time.time()})
    with open(path, "a") as fh:
        fh.write(line + "\n")


# --------------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------------


def _start(store_url: str, reader: str) -> None:
    StudyStore(store_url, shared=True).log("started", reader)
    st.session_state["started"] = True


def _instructions_text(study: Study, total: int) -> None:
    proto = study.protocol
    st.markdown(proto.render_instructions(total))
    rows = "\n".join(f"| {proto.key_for(p.value) or ''} | {p.label} |" for p in proto.scale)
    st.markdown(f"**Rating scale**\n\n| key | rating |\n|---|---|\n{rows}")
    if proto.time_limit_s:
        st.markdown(f"You have **{proto.time_limit_s:g} seconds** per case; the time counts "
                    "from the first display of a case, also across reloads.")
    st.markdown(
        "**Viewer**: mouse wheel or + / − to zoom (beyond 100 % you see the pixels), drag to "
        "pan, double-click or F to fit, **1:1** one image pixel per screen pixel. **Window / "
        "level**: right-drag (or switch the left drag to W/L with W), the sliders or a preset; "
        "I inverts, M shows a magnifier under the mouse, R resets. A rating counts once the "
        f"case has been on screen for {proto.min_view_ms / 1000:g} s; hold no key down.")


def _instructions(study: Study, store: StudyStore, reader: str, total: int) -> None:
    st.title(study.protocol.title)
    _instructions_text(study, total)
    st.button("Start", key="start", type="primary", on_click=_start, args=(store.url, reader))


def _completed(study: Study, store: StudyStore, reader: str, total: int) -> None:
    if not st.session_state.get("completed_logged"):
        if not store.has_event("completed", reader):
            store.log("completed", reader, n_cases=total)
        st.session_state["completed_logged"] = True
    st.title(study.protocol.title)
    st.progress(1.0, text=f"{total} / {total}")
    st.success(f"All {total} cases are rated. Thank you! You can close this page.")


def _help_html(study: Study, total: int) -> str:
    """The instructions panel of the viewer (protocol text, scale, viewer and timing notes)."""
    import html as _html

    proto = study.protocol
    rows = "".join(f"<tr><td><kbd>{_html.escape(proto.key_for(p.value) or '')}</kbd></td>"
                   f"<td>{_html.escape(p.label)}</td></tr>" for p in proto.scale)
    timing = (f"<p>You have <strong>{proto.time_limit_s:g} seconds</strong> per case; the time "
              "counts from the first display of a case, also across reloads.</p>"
              if proto.time_limit_s else "")
    return (instructions_html(proto.render_instructions(total))
            + f"<p><strong>Rating scale</strong></p><table>{rows}</table>" + timing
            + "<p><strong>Viewer</strong>: mouse wheel or + / − to zoom (beyond 100 % you see "
            "the pixels), drag to pan, double-click or F to fit, <strong>1:1</strong> one image "
            "pixel per screen pixel. <strong>Window / level</strong>: right-drag (or switch the "
            "left drag to W/L with W), the sliders or a preset; I inverts, M shows a magnifier "
            f"under the mouse, R resets. A rating counts once the case has been on screen for "
            f"{proto.min_view_ms / 1000:g} s; hold no key down.</p>")


def _case_page(study: Study, store: StudyStore, reader: str) -> None:
    ss = st.session_state
    proto = study.protocol
    scr = current_screen(store, proto, reader, ss.get("review"))
    if scr.finished:
        _completed(study, store, reader, scr.total)
        return
    if scr.mode != "review":
        ss["review"] = None
    time_up = scr.seconds_left is not None and scr.seconds_left <= 0
    keys = [k for k in (proto.key_for(v) for v in proto.values) if k is not None]
    data = {
        "view": scr.view_id, "episode": scr.view.n_shows, "mode": scr.mode,
        "image": None if time_up else case_data_url(study.case_path(scr.case)),
        "k": scr.position + 1, "n": scr.total, "done": scr.done,
        "scale": [{"value": p.value, "label": p.label, "key": proto.key_for(p.value)}
                  for p in proto.scale],
        "current": scr.current,
        "current_label": proto.label(scr.current) if scr.current is not None else None,
        "title": proto.title, "help": _help_html(study, scr.total),
        "question": proto.question, "min_view_ms": proto.min_view_ms,
        "seconds_left": scr.seconds_left, "back": scr.can_go_back,
        "ack": ss.get("ack"), "notice": ss.get("notice"),
        "hint": (f"Keys {keys[0]}–{keys[-1]} rate; " if keys else "")
        + "+/− zoom · F fit · W drag mode · I invert · M loupe · R reset · H help",
    }
    res = viewer(key=VIEWER_KEY, data=data,
                 on_rate_change=functools.partial(_on_event, "rate"),
                 on_nav_change=functools.partial(_on_event, "nav"))
    fresh = [_handle(ev, getattr(res, ev, None)) for ev in ("rate", "nav")]
    if any(fresh):  # a new session (server restart): the press was handled just now
        st.rerun()
    _record_timing(reader, scr.position + 1)


def _reader_page(study: Study, store: StudyStore, reader: str) -> None:
    ss = st.session_state
    if ss.get("reader") != reader:  # another link opened in the same browser session
        for k in ("started", "review", "completed_logged", "notice", "ack", "revoked"):
            ss.pop(k, None)
        ss["reader"] = reader
    if ss.get("revoked"):
        st.error(REVOKED_MESSAGE)
        return
    if not ss.get("started"):
        if store.rated(reader) or store.has_event("started", reader):
            ss["started"] = True
        else:
            _instructions(study, store, reader, len(store.assignments(reader)))
            return
    _case_page(study, store, reader)


def _coordinator_page(study: Study, store: StudyStore) -> None:
    from mame_eval.studies.audit import audit_warning, read_audit

    st.title(f"Coordinator: {study.protocol.title}")
    audit = read_audit(study.path)
    warning = audit_warning(audit) if audit is not None else None
    if warning:
        st.warning(warning)

    @st.fragment(run_every=5)
    def table() -> None:
        rows = []
        limit = study.protocol.time_limit_s
        for p in store.progress():
            state = "finished" if p.finished else ("reading" if p.started else "not started")
            row = {"reader": p.reader, "rated": p.done, "cases": p.total,
                   "progress": f"{(100 * p.done / p.total) if p.total else 0:.0f}%",
                   "state": state,
                   "median s/case": "-" if p.median_s is None else f"{p.median_s:.1f}"}
            if limit:
                row["over time"] = p.over_time
            row["last activity (UTC)"] = (p.last_activity or "never")[:19].replace("T", " ")
            rows.append(row)
        df = pd.DataFrame(rows)
        n_done = sum(r["state"] == "finished" for r in rows)
        st.markdown(f"{len(rows)} readers, {n_done} finished; refreshed every 5 s "
                    f"(last {time.strftime('%H:%M:%S')}). Ratings and the answer key are not "
                    "shown here; run `mame-eval study analyze` when everyone has finished.")
        st.table(df.set_index("reader") if not df.empty else df)

    table()


def main() -> None:
    st.set_page_config(page_title="Reader study", layout="wide",
                       initial_sidebar_state="collapsed")
    st.html(_PAGE_CSS)
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
    elif st.session_state.get("reader"):  # this page's link was valid and has been replaced
        st.error(REVOKED_MESSAGE)
    else:
        if not st.session_state.get("bad_token_logged"):
            _log_bad_token(store)
            st.session_state["bad_token_logged"] = True
        st.error(BAD_TOKEN_MESSAGE)


if __name__ == "__main__":
    main()
