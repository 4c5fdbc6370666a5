"""The study database: readers, assignments, ratings with their history, display episodes and
an append-only audit log (tables and versions: :mod:`mame_eval.studies.schema`).

SQLAlchemy Core over SQLite (``study.db`` in the study folder) or PostgreSQL (any
``postgresql://`` URL; the psycopg 3 driver of the ``postgres`` extra).

Concurrency and durability
--------------------------
* SQLite: WAL journal (reads never wait for writes), ``synchronous=FULL`` (a committed rating
  survives a power cut), every write transaction ``BEGIN IMMEDIATE`` and short. Within one
  process the writers queue on a lock (a fair FIFO wait) instead of SQLite's busy handler, whose
  sleep-and-retry back-off let one unlucky writer wait seconds while others kept winning;
  ``busy_timeout`` still covers writers in other processes (the CLI, a second server).
* PostgreSQL: one pooled engine per process and URL, ``READ COMMITTED``; the UNIQUE constraint
  on (reader, case) decides between two servers rating the same case at once.
* Every rating is written together with its audit event in one transaction, committed before
  the call returns (i.e. before the app shows the next case).

Time
----
Viewing time is measured here, by the server, from the display episodes in ``views``: a case's
episode opens when the app shows it (:meth:`StudyStore.open_view`) and closes when the reader
rates it or another case is shown. Reloading the page or going back and forth never restarts
the count; ``duration_s`` (until the first rating) and ``view_s`` (in total) come from it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import create_engine, event, func, inspect, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from mame_eval.errors import StudyError
from mame_eval.studies import schema
from mame_eval.studies.schema import (
    SCHEMA_VERSION,
    assignments_t,
    audit_t,
    cases_t,
    meta_t,
    ratings_t,
    readers_t,
    views_t,
)

__all__ = [
    "SCHEMA_VERSION",
    "Rating",
    "RatingOutcome",
    "RatingRejected",
    "ReaderProgress",
    "StudyStore",
    "ViewState",
    "normalize_url",
    "redact_url",
    "utcnow",
]


def utcnow() -> str:
    """Current UTC time as ISO 8601 with microseconds."""
    return _iso(time.time())


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs use the psycopg 3 driver (the ``postgres``
    extra); every other URL is returned unchanged."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def redact_url(url: str) -> str:
    """A database URL with its password hidden (for messages and ``study.toml``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


class _Duplicate(Exception):
    """The (reader, case) is rated already (found before the INSERT would fail)."""


class RatingRejected(StudyError):
    """A rating the app must not store, with the ``reason`` the reader is told about.

    ``reason`` is ``revoked`` (the link was replaced), ``not_shown`` (the case is not on the
    reader's screen any more) or ``too_fast`` (shown for less than the protocol's minimum).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Rating:
    reader: str
    case: str
    score: int
    shown_at: str | None
    rated_at: str
    duration_s: float | None
    source: str
    changes: int
    first_score: int | None = None
    changed_at: str | None = None
    view_s: float | None = None
    over_time: bool = False


@dataclass(frozen=True)
class RatingOutcome:
    """What :meth:`StudyStore.record_rating` did: ``stored`` is False for a duplicate."""

    stored: bool
    duration_s: float | None = None
    over_time: bool = False

    def __bool__(self) -> bool:
        return self.stored


@dataclass(frozen=True)
class ViewState:
    """A case on a reader's screen: server-side times in seconds."""

    case: str
    first_shown_at: str
    view_s: float          # total viewing time so far, the episode in progress included
    episode_s: float       # time since the episode in progress opened
    n_shows: int
    new_episode: bool      # this call opened the episode (False: a rerun / reload continues it)


@dataclass(frozen=True)
class ReaderProgress:
    reader: str
    done: int
    total: int
    started: bool
    last_activity: str | None
    median_s: float | None = None   # median viewing time until the first rating
    over_time: int = 0              # ratings given after the protocol's time limit

    @property
    def finished(self) -> bool:
        return self.done >= self.total


_ENGINES: dict[str, Engine] = {}
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_ASSIGNMENTS: dict[tuple[str, str], list[str]] = {}
_ENGINES_LOCK = threading.Lock()


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                           pool_size=8, max_overflow=32)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised through every call
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - exercised through every call
        immediate = conn.get_execution_options().get("mame_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgres_engine(url: str) -> Engine:
    # Streamlit runs every reader's session in its own thread: enough pooled connections that
    # a few dozen readers never queue for one (the server's default max_connections is 100).
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30,
                         pool_timeout=30, connect_args={"connect_timeout": 10})


class StudyStore:
    """Access to one study's database (see the module docstring).

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:////path/study.db`` or ``postgresql://user@host/db``.
    shared : bool
        Reuse one engine per URL within the process (the Streamlit app's sessions share it).
    """

    #: the clock of every server-side time (epoch seconds); tests replace it
    clock = staticmethod(time.time)

    def __init__(self, url: str, *, shared: bool = False):
        url = normalize_url(url)
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StudyError(f"--db {redact_url(url)!r}: not a SQLAlchemy database URL "
                             "(e.g. sqlite:///study.db or postgresql://user@host/name)") from None
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._shared = shared
        try:
            if shared:
                with _ENGINES_LOCK:
                    engine = _ENGINES.get(url)
                    if engine is None:
                        engine = self._make_engine(url)
                        _ENGINES[url] = engine
                self.engine = engine
            else:
                self.engine = self._make_engine(url)
            # write transactions take the SQLite write lock up front (BEGIN IMMEDIATE)
            self._writer = self.engine.execution_options(mame_write=True)
        except ImportError as exc:
            hint = (" (pip install 'mame-eval[postgres]' for PostgreSQL)"
                    if parsed.get_backend_name() == "postgresql" else "")
            raise StudyError(f"database {redact_url(url)}: no driver ({exc}){hint}") from None
        except SQLAlchemyError as exc:
            raise StudyError(f"database {redact_url(url)}: cannot connect ({exc})") from None
        with _ENGINES_LOCK:
            self._lock = _WRITE_LOCKS.setdefault(url, threading.Lock())

    def _make_engine(self, url: str) -> Engine:
        if self.is_sqlite:
            return _sqlite_engine(url)
        return _postgres_engine(url)

    def close(self) -> None:
        """Release the connections (not for a shared engine)."""
        if not self._shared:
            self.engine.dispose()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _where(self) -> str:
        return redact_url(self.url)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One short write transaction; SQLite writers of this process queue on a lock."""
        lock = self._lock if self.is_sqlite else contextlib.nullcontext()
        with lock, self._writer.begin() as conn:
            yield conn

    def _error(self, what: str, exc: Exception) -> StudyError:
        return StudyError(f"database {self._where()}: {what} "
                          f"({getattr(exc, 'orig', None) or exc})")

    # ------------------------------------------------------------------ schema

    def exists(self) -> bool:
        """Whether any study table is present."""
        try:
            names = set(inspect(self.engine).get_table_names())
        except SQLAlchemyError as exc:
            raise self._error("cannot read", exc) from None
        return "meta" in names

    def schema_version(self) -> int | None:
        try:
            with self.engine.connect() as conn:
                return schema.stored_version(conn)
        except SQLAlchemyError as exc:
            raise self._error("cannot read", exc) from None

    def check(self) -> None:
        """Raise StudyError unless this is a study database of the current schema version."""
        schema.check_version(self.schema_version(), self._where())

    def upgrade(self) -> tuple[int, int]:
        """Migrate an older study database to the current schema (one transaction)."""
        try:
            with self._write() as conn:
                return schema.upgrade(conn)
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise self._error("the upgrade failed, nothing was changed", exc) from None

    def create(self, *, study_name: str, case_ids: Sequence[str],
               orders: dict[str, Sequence[str]], token_hashes: dict[str, str],
               coordinator_hash: str, extra_meta: dict[str, str] | None = None) -> None:
        """Create the schema and fill readers, cases and assignments in one transaction."""
        try:
            if set(inspect(self.engine).get_table_names()) & set(schema.TABLES):
                raise StudyError(f"database {self._where()} already holds study tables; use a "
                                 "new database for a new study")
            now = utcnow()
            with self._write() as conn:
                schema.create_schema(conn)
                meta = {"schema_version": SCHEMA_VERSION, "study_name": study_name,
                        "coordinator_token_hash": coordinator_hash, "created_at": now,
                        **(extra_meta or {})}
                conn.execute(meta_t.insert(), [{"key": k, "value": str(v)}
                                               for k, v in meta.items()])
                conn.execute(cases_t.insert(), [{"case_id": c} for c in case_ids])
                conn.execute(readers_t.insert(), [
                    {"name": r, "token_hash": token_hashes[r], "rank": i, "created_at": now}
                    for i, r in enumerate(orders)])
                rows = [{"reader": r, "case_id": c, "position": p}
                        for r, order in orders.items() for p, c in enumerate(order)]
                conn.execute(assignments_t.insert(), rows)
                conn.execute(audit_t.insert(), [{
                    "at": now, "event": "created", "reader": None, "case_id": None,
                    "detail": json.dumps({"readers": list(orders), "n_cases": len(case_ids),
                                          "schema_version": SCHEMA_VERSION})}])
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise self._error("cannot create the study", exc) from None

    def drop(self) -> None:
        """Remove every study table (used to undo a failed ``create`` on an external database)."""
        with self._write() as conn:
            schema.metadata.drop_all(conn)
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("DROP FUNCTION IF EXISTS mame_audit_append_only()")

    # ------------------------------------------------------------------ reads

    def _read(self, stmt):
        try:
            with self.engine.connect() as conn:
                return conn.execute(stmt).all()
        except SQLAlchemyError as exc:
            raise self._error("cannot read", exc) from None

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self._read(select(meta_t.c.key, meta_t.c.value))}

    def readers(self) -> list[str]:
        """Reader names in the order given at creation."""
        return [r for (r,) in self._read(select(readers_t.c.name).order_by(readers_t.c.rank))]

    def case_ids(self) -> list[str]:
        return [c for (c,) in self._read(select(cases_t.c.case_id).order_by(cases_t.c.case_id))]

    def reader_for_token(self, token: str | None) -> str | None:
        """The reader whose token this is, or None."""
        from mame_eval.studies.design import hash_token

        if not token:
            return None
        rows = self._read(select(readers_t.c.name).where(
            readers_t.c.token_hash == hash_token(token)))
        return rows[0][0] if rows else None

    def is_coordinator(self, token: str | None) -> bool:
        import hmac

        from mame_eval.studies.design import hash_token

        if not token:
            return False
        rows = self._read(select(meta_t.c.value).where(meta_t.c.key == "coordinator_token_hash"))
        stored = rows[0][0] if rows else ""
        return bool(stored) and hmac.compare_digest(stored, hash_token(token))

    def assignments(self, reader: str) -> list[str]:
        """The reader's cases in their order (fixed at creation: cached for shared stores)."""
        key = (self.url, reader)
        if self._shared and key in _ASSIGNMENTS:
            return list(_ASSIGNMENTS[key])
        rows = self._read(select(assignments_t.c.case_id)
                          .where(assignments_t.c.reader == reader)
                          .order_by(assignments_t.c.position))
        order = [c for (c,) in rows]
        if self._shared and order:
            _ASSIGNMENTS[key] = order
        return list(order)

    @staticmethod
    def _rating(r) -> Rating:
        return Rating(reader=r.reader, case=r.case_id, score=int(r.score), shown_at=r.shown_at,
                      rated_at=r.rated_at, duration_s=r.duration_s, source=r.source,
                      changes=int(r.changes),
                      first_score=None if r.first_score is None else int(r.first_score),
                      changed_at=r.changed_at, view_s=r.view_s, over_time=bool(r.over_time))

    def ratings(self, reader: str | None = None) -> list[Rating]:
        stmt = select(ratings_t).order_by(ratings_t.c.reader, ratings_t.c.id)
        if reader is not None:
            stmt = stmt.where(ratings_t.c.reader == reader)
        return [self._rating(r) for r in self._read(stmt)]

    def rated(self, reader: str) -> dict[str, int]:
        """case -> score of everything ``reader`` has rated."""
        rows = self._read(select(ratings_t.c.case_id, ratings_t.c.score)
                          .where(ratings_t.c.reader == reader))
        return {c: int(s) for c, s in rows}

    def next_case(self, reader: str) -> tuple[int, str] | None:
        """(position, case) of the reader's first unrated case in their order, or None."""
        rated = (select(ratings_t.c.case_id).where(ratings_t.c.reader == reader)).scalar_subquery()
        stmt = (select(assignments_t.c.position, assignments_t.c.case_id)
                .where(assignments_t.c.reader == reader, assignments_t.c.case_id.not_in(rated))
                .order_by(assignments_t.c.position).limit(1))
        rows = self._read(stmt)
        return (int(rows[0][0]), rows[0][1]) if rows else None

    def has_event(self, event_name: str, reader: str | None = None) -> bool:
        stmt = select(func.count()).select_from(audit_t).where(audit_t.c.event == event_name)
        if reader is not None:
            stmt = stmt.where(audit_t.c.reader == reader)
        return self._read(stmt)[0][0] > 0

    def progress(self) -> list[ReaderProgress]:
        """Per reader: cases rated / assigned, started, last activity, median time per case
        and over-time count. No scores."""
        totals = dict(self._read(select(assignments_t.c.reader, func.count())
                                 .group_by(assignments_t.c.reader)))
        per: dict[str, list] = {}
        for reader, duration, over in self._read(select(
                ratings_t.c.reader, ratings_t.c.duration_s, ratings_t.c.over_time)):
            per.setdefault(reader, []).append((duration, over))
        last = dict(self._read(select(audit_t.c.reader, func.max(audit_t.c.at))
                               .where(audit_t.c.reader.is_not(None))
                               .group_by(audit_t.c.reader)))
        started = {r for (r,) in self._read(select(audit_t.c.reader).distinct()
                                            .where(audit_t.c.event == "started"))}
        out = []
        for r in self.readers():
            rows = per.get(r, [])
            times = [d for d, _ in rows if d is not None]
            out.append(ReaderProgress(
                reader=r, done=len(rows), total=int(totals.get(r, 0)),
                started=r in started or bool(rows), last_activity=last.get(r),
                median_s=statistics.median(times) if times else None,
                over_time=sum(1 for _, o in rows if o)))
        return out

    def audit(self, reader: str | None = None) -> list[dict]:
        stmt = select(audit_t).order_by(audit_t.c.id)
        if reader is not None:
            stmt = stmt.where(audit_t.c.reader == reader)
        return [{"id": r.id, "at": r.at, "event": r.event, "reader": r.reader,
                 "case": r.case_id, "detail": json.loads(r.detail) if r.detail else None}
                for r in self._read(stmt)]

    def count_events(self, event_name: str) -> int:
        return int(self._read(select(func.count()).select_from(audit_t)
                              .where(audit_t.c.event == event_name))[0][0])

    def view_state(self, reader: str, case: str) -> ViewState | None:
        """The case's display record (None when it was never shown to the reader)."""
        rows = self._read(select(views_t).where(views_t.c.reader == reader,
                                                views_t.c.case_id == case))
        if not rows:
            return None
        return self._view_state(rows[0], self.clock(), new=False)

    @staticmethod
    def _view_state(row, now: float, new: bool) -> ViewState:
        episode = 0.0 if row.open_since_s is None else max(0.0, now - row.open_since_s)
        return ViewState(case=row.case_id, first_shown_at=row.first_shown_at,
                         view_s=float(row.view_s) + episode, episode_s=episode,
                         n_shows=int(row.n_shows), new_episode=new)

    # ------------------------------------------------------------------ writes

    @staticmethod
    def _event(conn, event_name: str, reader: str | None, case: str | None,
               detail: dict | None, at: str | None = None) -> None:
        conn.execute(audit_t.insert().values(
            at=at or utcnow(), event=event_name, reader=reader, case_id=case,
            detail=json.dumps(detail, sort_keys=True) if detail else None))

    def log(self, event_name: str, reader: str | None = None, case: str | None = None,
            **detail) -> None:
        """Append one event to the audit log (its own transaction)."""
        try:
            with self._write() as conn:
                self._event(conn, event_name, reader, case, detail or None)
        except SQLAlchemyError as exc:
            raise self._error("cannot write the audit log", exc) from None

    def _check_assigned(self, conn, reader: str, case: str) -> None:
        row = conn.execute(select(assignments_t.c.position).where(
            assignments_t.c.reader == reader, assignments_t.c.case_id == case)).first()
        if row is None:
            raise StudyError(f"case {case!r} is not assigned to reader {reader!r}")

    @staticmethod
    def _check_token(conn, reader: str, token_hash: str | None) -> None:
        if token_hash is None:
            return
        row = conn.execute(select(readers_t.c.token_hash)
                           .where(readers_t.c.name == reader)).first()
        if row is None or row[0] != token_hash:
            raise RatingRejected("revoked", "this link is no longer valid: the study "
                                 "coordinator has issued a new one")

    @staticmethod
    def _close_episode(conn, row, now: float) -> float:
        """Close the open display episode of ``row`` (a views row); return its total time."""
        total = float(row.view_s) + max(0.0, now - row.open_since_s)
        conn.execute(update(views_t).where(views_t.c.reader == row.reader,
                                           views_t.c.case_id == row.case_id)
                     .values(view_s=total, open_since_s=None))
        return total

    def open_view(self, reader: str, case: str, **detail) -> ViewState:
        """The case is on the reader's screen: open its display episode, closing any other.

        A rerun or a reload of the page showing the same case continues the episode in
        progress and writes nothing; a new episode is logged as a ``shown`` event (with
        ``detail``). The first display of a case fixes ``first_shown_at``.
        """
        now = self.clock()
        open_rows = self._read(select(views_t).where(
            views_t.c.reader == reader,
            (views_t.c.case_id == case) | views_t.c.open_since_s.is_not(None)))
        mine = [r for r in open_rows if r.case_id == case]
        others = [r for r in open_rows if r.case_id != case]
        if mine and mine[0].open_since_s is not None and not others:
            return self._view_state(mine[0], now, new=False)
        try:
            with self._write() as conn:
                self._check_assigned(conn, reader, case)
                new = self._open_in(conn, reader, case, now, detail or None)
                row = conn.execute(select(views_t).where(
                    views_t.c.reader == reader, views_t.c.case_id == case)).first()
                return self._view_state(row, now, new=new)
        except IntegrityError:  # another server opened it at the same moment: read theirs
            state = self.view_state(reader, case)
            if state is None:
                raise StudyError(f"the display of case {case!r} to {reader!r} could not be "
                                 "recorded") from None
            return state
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise self._error(f"the display of case {case!r} could not be recorded", exc) \
                from None

    def _open_in(self, conn, reader: str, case: str, now: float, detail: dict | None) -> bool:
        """Open ``case``'s display episode inside ``conn``'s transaction, closing the reader's
        other open episode; True when a new episode started (logged as ``shown``)."""
        for row in conn.execute(select(views_t).where(
                views_t.c.reader == reader, views_t.c.case_id != case,
                views_t.c.open_since_s.is_not(None))).all():
            self._close_episode(conn, row, now)
        row = conn.execute(select(views_t).where(
            views_t.c.reader == reader, views_t.c.case_id == case)).first()
        if row is None:
            conn.execute(views_t.insert().values(
                reader=reader, case_id=case, first_shown_at=_iso(now), first_shown_s=now,
                view_s=0.0, open_since_s=now, n_shows=1))
        elif row.open_since_s is None:
            conn.execute(update(views_t).where(views_t.c.reader == reader,
                                               views_t.c.case_id == case)
                         .values(open_since_s=now, n_shows=views_t.c.n_shows + 1))
        else:
            return False
        self._event(conn, "shown", reader, case, detail, at=_iso(now))
        return True

    def close_views(self, reader: str) -> None:
        """Close the reader's open display episode, if any (nothing is on their screen)."""
        now = self.clock()
        if not self._read(select(views_t.c.case_id).where(
                views_t.c.reader == reader, views_t.c.open_since_s.is_not(None))):
            return
        with self._write() as conn:
            for row in conn.execute(select(views_t).where(
                    views_t.c.reader == reader, views_t.c.open_since_s.is_not(None))).all():
                self._close_episode(conn, row, now)

    def _open_episode(self, conn, reader: str, case: str, min_view_s: float,
                      now: float) -> tuple[str, float]:
        row = conn.execute(select(views_t).where(views_t.c.reader == reader,
                                                 views_t.c.case_id == case)).first()
        if row is None or row.open_since_s is None:
            raise RatingRejected("not_shown", "this case is no longer on your screen (it was "
                                 "rated or left in another window); the current case is shown")
        episode = now - row.open_since_s
        if episode < min_view_s:
            raise RatingRejected("too_fast", f"the case was on screen for {episode:.2f} s, less "
                                 f"than the {min_view_s:g} s minimum; look at it, then rate")
        return row.first_shown_at, self._close_episode(conn, row, now)

    def record_rating(self, reader: str, case: str, score: int, *,
                      token_hash: str | None = None, min_view_s: float | None = None,
                      time_limit_s: float | None = None, source: str = "app",
                      detail: dict | None = None,
                      then_show: tuple[str, dict] | None = None) -> RatingOutcome:
        """Store the first rating of (reader, case) and its ``rated`` audit event, committed.

        Parameters
        ----------
        token_hash : when given, the reader's token must still be this one (checked in the
            same transaction: a revoked link stores nothing).
        min_view_s : when given (the app always gives it), the case must be on the reader's
            screen -- an open display episode -- for at least this many seconds.
        time_limit_s : the protocol's time per case; a rating after it is flagged over time.
        then_show : (case, detail) the app shows next: its display episode opens in the same
            transaction (one commit per rating instead of two; on SQLite each commit waits for
            an fsync, and the writers queue for them).

        Returns
        -------
        RatingOutcome, falsy when the reader had already rated the case (the earlier rating is
        kept and a ``duplicate`` event is logged).

        Raises
        ------
        RatingRejected
            ``revoked``, ``not_shown`` or ``too_fast``: nothing was stored.
        """
        now = self.clock()
        try:
            with self._write() as conn:
                self._check_token(conn, reader, token_hash)
                self._check_assigned(conn, reader, case)
                if conn.execute(select(ratings_t.c.id).where(
                        ratings_t.c.reader == reader, ratings_t.c.case_id == case)).first():
                    raise _Duplicate
                shown_at, view_s = None, None
                if min_view_s is not None:
                    shown_at, view_s = self._open_episode(conn, reader, case, min_view_s, now)
                else:
                    row = conn.execute(select(views_t).where(
                        views_t.c.reader == reader, views_t.c.case_id == case)).first()
                    if row is not None:
                        shown_at = row.first_shown_at
                        view_s = (self._close_episode(conn, row, now)
                                  if row.open_since_s is not None else float(row.view_s))
                over = bool(time_limit_s and view_s is not None and view_s > time_limit_s)
                conn.execute(ratings_t.insert().values(
                    reader=reader, case_id=case, score=int(score), first_score=int(score),
                    shown_at=shown_at, rated_at=_iso(now), duration_s=view_s, view_s=view_s,
                    source=source, changes=0, over_time=int(over)))
                info = {"score": int(score), "duration_s": view_s, "source": source,
                        **(detail or {})}
                if over:
                    info["over_time"] = True
                self._event(conn, "rated", reader, case, info, at=_iso(now))
                if then_show is not None:
                    self._open_in(conn, reader, then_show[0], now, then_show[1] or None)
            return RatingOutcome(stored=True, duration_s=view_s, over_time=over)
        except (_Duplicate, IntegrityError):
            self.log("duplicate", reader, case, score=int(score), source=source)
            return RatingOutcome(stored=False)
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise self._error(f"the rating of case {case!r} by {reader!r} could not be saved",
                              exc) from None

    def change_rating(self, reader: str, case: str, score: int, *,
                      token_hash: str | None = None, min_view_s: float | None = None,
                      time_limit_s: float | None = None, duration_s: float | None = None) -> int:
        """Replace an existing rating (only when the protocol allows going back).

        The first score stays in ``first_score``; ``changes`` counts the changes, ``view_s``
        the total viewing time, and ``over_time`` stays set once the limit was exceeded.
        Returns the previous score; logs a ``changed`` event with old and new scores.
        """
        now = self.clock()
        try:
            with self._write() as conn:
                self._check_token(conn, reader, token_hash)
                row = conn.execute(select(ratings_t.c.score, ratings_t.c.over_time,
                                          ratings_t.c.view_s).where(
                    ratings_t.c.reader == reader, ratings_t.c.case_id == case)).first()
                if row is None:
                    raise StudyError(f"reader {reader!r} has not rated case {case!r} yet; "
                                     "nothing to change")
                old = int(row[0])
                view_s = row.view_s
                if min_view_s is not None:
                    _, view_s = self._open_episode(conn, reader, case, min_view_s, now)
                over = bool(row.over_time) or bool(
                    time_limit_s and view_s is not None and view_s > time_limit_s)
                conn.execute(update(ratings_t)
                             .where(ratings_t.c.reader == reader, ratings_t.c.case_id == case)
                             .values(score=int(score), changed_at=_iso(now), view_s=view_s,
                                     over_time=int(over), changes=ratings_t.c.changes + 1))
                self._event(conn, "changed", reader, case,
                            {"old": old, "new": int(score), "view_s": view_s,
                             "duration_s": duration_s, "over_time": over}, at=_iso(now))
            return old
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise self._error(f"the change of case {case!r} by {reader!r} could not be saved",
                              exc) from None

    def import_ratings(self, rows: Iterable[tuple[str, str, int]], source: str) -> tuple[int, int]:
        """Insert (reader, case, score) rows in ONE transaction (all or nothing).

        A row identical to a stored rating is skipped; a different score for an already rated
        (reader, case) raises StudyError and nothing is written.

        Returns
        -------
        (n_new, n_unchanged)
        """
        rows = list(rows)
        now = utcnow()
        n_new = n_same = 0
        try:
            with self._write() as conn:
                existing = {(r, c): int(s) for r, c, s in conn.execute(
                    select(ratings_t.c.reader, ratings_t.c.case_id, ratings_t.c.score))}
                for reader, case, score in rows:
                    old = existing.get((reader, case))
                    if old is not None:
                        if old != int(score):
                            raise StudyError(
                                f"{source}: reader {reader!r} already rated case {case!r} "
                                f"{old} (stored), the file says {score}; ratings are not "
                                "overwritten")
                        n_same += 1
                        continue
                    self._check_assigned(conn, reader, case)
                    conn.execute(ratings_t.insert().values(
                        reader=reader, case_id=case, score=int(score), first_score=int(score),
                        shown_at=None, rated_at=now, duration_s=None, view_s=None,
                        source="import", changes=0, over_time=0))
                    self._event(conn, "imported", reader, case,
                                {"score": int(score), "file": source}, at=now)
                    existing[(reader, case)] = int(score)
                    n_new += 1
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise self._error("import failed, nothing was written", exc) from None
        return n_new, n_same

    def set_reader_token(self, reader: str, token_hash: str) -> None:
        """Replace a reader's token hash (the old link stops working at its next action)."""
        with self._write() as conn:
            res = conn.execute(update(readers_t).where(readers_t.c.name == reader)
                               .values(token_hash=token_hash))
            if res.rowcount != 1:
                raise StudyError(f"reader {reader!r} is not part of this study")
            self._event(conn, "token_reissued", reader, None, None)

    def set_coordinator_token(self, token_hash: str) -> None:
        with self._write() as conn:
            conn.execute(update(meta_t).where(meta_t.c.key == "coordinator_token_hash")
                         .values(value=token_hash))
            self._event(conn, "token_reissued", None, None, {"role": "coordinator"})

    def reader_token_hash(self, reader: str) -> str | None:
        rows = self._read(select(readers_t.c.token_hash).where(readers_t.c.name == reader))
        return rows[0][0] if rows else None

    def dump(self) -> str:
        """Every row of every table as text (for leak checks in tests)."""
        with self.engine.connect() as conn:
            return schema.dump_all(conn)
