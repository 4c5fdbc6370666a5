"""What a reader's page shows and what a rating press does: the library behind the reader app.

The Streamlit app (:mod:`mame_eval.studies.app`) is a thin face over two functions:

* :func:`current_screen` -- the case to show (the first unrated one in the reader's order, or the
  rated one being reviewed when the protocol allows going back), with its server-side display
  episode opened in the database (:meth:`StudyStore.open_view`), the viewing time left under a
  time limit, and an opaque ``view_id`` that names the case to this reader only;
* :func:`submit_rating` -- a press from the page (``view_id``, score). It is stored only for the
  case whose display is open on this reader's screen, with the token still valid, after the
  protocol's minimum viewing time (measured by the server), flagged when over the time limit.
  Every refusal comes back as an :class:`Outcome` with the sentence the page shows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mame_eval.studies.design import hash_token
from mame_eval.studies.protocol import Protocol
from mame_eval.studies.store import RatingRejected, StudyStore, ViewState

__all__ = ["Outcome", "Screen", "current_screen", "submit_rating", "view_id"]


def view_id(reader: str, case: str) -> str:
    """An opaque name of ``case`` for ``reader``'s page (reveals neither the case name nor
    anything shared with other readers)."""
    return hashlib.sha256(f"mame-view\0{reader}\0{case}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Screen:
    """What the reader's page shows now. ``case`` is None when every case is rated."""

    case: str | None
    position: int
    total: int
    done: int
    mode: str = "rate"                  # "rate" a new case or "review" a rated one
    current: int | None = None          # the stored score of a reviewed case
    view: ViewState | None = None
    seconds_left: float | None = None   # viewing time left under the protocol's limit
    can_go_back: bool = False
    view_id: str | None = None          # the opaque name of the case on this page

    @property
    def finished(self) -> bool:
        return self.case is None


def current_screen(store: StudyStore, protocol: Protocol, reader: str,
                   review: str | None = None) -> Screen:
    """The case to show ``reader`` now, its display episode opened (see the module docstring).

    ``review`` is the rated case the reader went back to (ignored unless the protocol allows
    going back and the case is rated).
    """
    assigned = store.assignments(reader)
    rated = store.rated(reader)
    total, done = len(assigned), len(rated)
    if review is not None and (not protocol.allow_back or review not in rated):
        review = None
    if review is None:
        position = next((i for i, c in enumerate(assigned) if c not in rated), None)
        if position is None:
            store.close_views(reader)
            return Screen(case=None, position=total, total=total, done=done)
        case, mode = assigned[position], "rate"
    else:
        case, mode = review, "review"
        position = assigned.index(case)
    view = store.open_view(reader, case, position=position, mode=mode)
    left = None
    if protocol.time_limit_s:
        left = max(0.0, protocol.time_limit_s - view.view_s)
    back = bool(protocol.allow_back and position > 0 and assigned[position - 1] in rated)
    return Screen(case=case, position=position, total=total, done=done, mode=mode,
                  current=rated.get(case) if mode == "review" else None, view=view,
                  seconds_left=left, can_go_back=back, view_id=view_id(reader, case))


@dataclass(frozen=True)
class Outcome:
    """The answer to a press: ``kind`` is ``ok`` (stored, nothing to say), ``info``,
    ``warn`` (not stored), ``error`` or ``revoked`` (the link was replaced: the page stops)."""

    stored: bool
    kind: str
    message: str | None = None
    leave_review: bool = False


def submit_rating(store: StudyStore, protocol: Protocol, reader: str, token: str,
                  payload: dict, review: str | None = None) -> Outcome:
    """Store one press from the page, or say why not (see the module docstring).

    ``payload`` is what the page sent: ``{"view": view_id, "score": int, ...}`` (``via`` and
    ``shown_ms``, the client's view of the timing, are kept in the audit event).
    """
    if not isinstance(payload, dict):
        return Outcome(False, "error", "The rating could not be read; it was not stored.")
    vid, score = payload.get("view"), payload.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or \
            int(score) != score or int(score) not in protocol.values:
        return Outcome(False, "error", f"The rating {score!r} is not on this study's scale; "
                       "it was not stored.")
    score = int(score)
    case = next((c for c in store.assignments(reader) if view_id(reader, c) == vid), None)
    if case is None:
        return Outcome(False, "error", "That rating did not name one of your cases; it was "
                       "not stored.")
    min_view_s = protocol.min_view_ms / 1000.0
    detail = {k: payload[k] for k in ("via", "shown_ms") if k in payload}
    try:
        if review is not None and review == case and protocol.allow_back:
            old = store.change_rating(reader, case, score, token_hash=hash_token(token),
                                      min_view_s=min_view_s,
                                      time_limit_s=protocol.time_limit_s)
            return Outcome(True, "info", f"Rating changed from {old} ({protocol.label(old)}) to "
                           f"{score} ({protocol.label(score)}).", leave_review=True)
        assigned, rated = store.assignments(reader), store.rated(reader)
        nxt = next(((i, c) for i, c in enumerate(assigned) if c not in rated and c != case),
                   None)
        res = store.record_rating(reader, case, score, token_hash=hash_token(token),
                                  min_view_s=min_view_s, time_limit_s=protocol.time_limit_s,
                                  detail=detail,
                                  then_show=None if nxt is None else
                                  (nxt[1], {"position": nxt[0], "mode": "rate"}))
    except RatingRejected as exc:
        if exc.reason == "revoked":
            return Outcome(False, "revoked", "This link is no longer valid: the study "
                           "coordinator has issued you a new one. Your last rating was NOT "
                           "stored; every earlier rating is kept. Please use your new link.")
        if exc.reason == "too_fast":
            return Outcome(False, "warn", f"Not stored: {exc}.")
        return Outcome(False, "warn", "Not stored: this case is no longer open in this window "
                       "(it was rated or left in another window). The current case is shown.")
    if not res.stored:
        return Outcome(False, "info", "This case had already been rated (in another window?); "
                       "the first rating was kept.")
    if res.over_time:
        return Outcome(True, "info", "Stored, after the time limit (this is recorded).")
    return Outcome(True, "ok")
