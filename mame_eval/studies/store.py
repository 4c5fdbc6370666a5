"""The study database: readers, assignments, ratings and an append-only audit log.

SQLAlchemy Core over SQLite (``study.db`` in the study folder, WAL journal, ``synchronous=FULL``,
every write transaction ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing; reads
never block) or over any
SQLAlchemy URL (e.g. ``postgresql://…`` for a multi-site study).

Tables
------
``meta``         key/value: schema version, study name, coordinator token hash, created_at.
``readers``      name, SHA-256 of the reader's token, position in the reader list.
``cases``        the opaque case names (never the truth: the answer key lives in ``key.csv``).
``assignments``  (reader, case, position): each reader's case order; unique per reader/case
                 and per reader/position.
``ratings``      one row per (reader, case) -- enforced by a UNIQUE constraint -- with the
                 score, when the case was shown and rated, the time spent and the source
                 (``app`` or ``import``).
``audit``        every event (created, started, shown, rated, changed, duplicate, imported,
                 completed, bad_token, token_reissued) with a UTC timestamp. Append-only: the
                 store has no update/delete for it and, on SQLite, triggers refuse both.

Every rating is written together with its audit event in one transaction, committed before
the call returns (i.e. before the app shows the next case).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import (
    Column,
    Float,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from mame_eval.errors import StudyError

__all__ = [
    "SCHEMA_VERSION",
    "Rating",
    "ReaderProgress",
    "StudyStore",
    "redact_url",
    "utcnow",
]

SCHEMA_VERSION = "1"

metadata = MetaData()

meta_t = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
readers_t = Table(
    "readers", metadata,
    Column("name", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("rank", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
)
cases_t = Table(
    "cases", metadata,
    Column("case_id", String(64), primary_key=True),
)
assignments_t = Table(
    "assignments", metadata,
    Column("reader", String(64), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    PrimaryKeyConstraint("reader", "case_id", name="pk_assignments"),
    UniqueConstraint("reader", "position", name="uq_assignment_position"),
    ForeignKeyConstraint(["reader"], ["readers.name"], name="fk_assignment_reader"),
    ForeignKeyConstraint(["case_id"], ["cases.case_id"], name="fk_assignment_case"),
)
ratings_t = Table(
    "ratings", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reader", String(64), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("score", Integer, nullable=False),
    Column("shown_at", String(40)),
    Column("rated_at", String(40), nullable=False),
    Column("duration_s", Float),
    Column("source", String(16), nullable=False),
    Column("changes", Integer, nullable=False, default=0),
    UniqueConstraint("reader", "case_id", name="uq_one_rating_per_reader_case"),
    ForeignKeyConstraint(["reader", "case_id"], ["assignments.reader", "assignments.case_id"],
                         name="fk_rating_assignment"),
)
audit_t = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", String(40), nullable=False),
    Column("event", String(32), nullable=False),
    Column("reader", String(64)),
    Column("case_id", String(64)),
    Column("detail", Text),
)

_SQLITE_AUDIT_TRIGGERS = (
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)


def utcnow() -> str:
    """Current UTC time as ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def redact_url(url: str) -> str:
    """A database URL with its password hidden (for messages and ``study.toml``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


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


@dataclass(frozen=True)
class ReaderProgress:
    reader: str
    done: int
    total: int
    started: bool
    last_activity: str | None

    @property
    def finished(self) -> bool:
        return self.done >= self.total


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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


class StudyStore:
    """Access to one study's database (see the module docstring).

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:////path/study.db`` or ``postgresql://user@host/db``.
    shared : bool
        Reuse one engine per URL within the process (the Streamlit app's sessions share it).
    """

    def __init__(self, url: str, *, shared: bool = False):
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StudyError(f"--db {url!r}: not a SQLAlchemy database URL "
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
        except (SQLAlchemyError, ImportError) as exc:
            raise StudyError(f"database {redact_url(url)}: cannot connect ({exc})") from None

    def _make_engine(self, url: str) -> Engine:
        if self.is_sqlite:
            return _sqlite_engine(url)
        return create_engine(url, pool_pre_ping=True)

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

    # ------------------------------------------------------------------ schema

    def exists(self) -> bool:
        """Whether the study tables are present."""
        try:
            names = set(inspect(self.engine).get_table_names())
        except SQLAlchemyError as exc:
            raise StudyError(f"database {self._where()}: cannot read ({exc})") from None
        return {"meta", "readers", "cases", "assignments", "ratings", "audit"} <= names

    def check(self) -> None:
        """Raise StudyError unless this is a study database of the supported schema."""
        if not self.exists():
            raise StudyError(f"database {self._where()}: no study tables found (not created by "
                             "`mame-eval study create`?)")
        version = self.meta().get("schema_version")
        if version != SCHEMA_VERSION:
            raise StudyError(f"database {self._where()}: schema version {version!r}, expected "
                             f"{SCHEMA_VERSION!r}")

    def create(self, *, study_name: str, case_ids: Sequence[str],
               orders: dict[str, Sequence[str]], token_hashes: dict[str, str],
               coordinator_hash: str, extra_meta: dict[str, str] | None = None) -> None:
        """Create the schema and fill readers, cases and assignments in one transaction."""
        try:
            if set(inspect(self.engine).get_table_names()) & set(metadata.tables):
                raise StudyError(f"database {self._where()} already holds study tables; use a "
                                 "new database for a new study")
            metadata.create_all(self.engine)
            now = utcnow()
            with self._writer.begin() as conn:
                if self.is_sqlite:
                    for ddl in _SQLITE_AUDIT_TRIGGERS:
                        conn.exec_driver_sql(ddl)
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
                    "detail": json.dumps({"readers": list(orders), "n_cases": len(case_ids)})}])
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise StudyError(f"database {self._where()}: cannot create the study ({exc})") from None

    # ------------------------------------------------------------------ reads

    def _read(self, stmt):
        try:
            with self.engine.connect() as conn:
                return conn.execute(stmt).all()
        except SQLAlchemyError as exc:
            raise StudyError(f"database {self._where()}: cannot read "
                             f"({getattr(exc, 'orig', None) or exc})") from None

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
        stored = self.meta().get("coordinator_token_hash", "")
        return bool(stored) and hmac.compare_digest(stored, hash_token(token))

    def assignments(self, reader: str) -> list[str]:
        """The reader's cases in their order."""
        rows = self._read(select(assignments_t.c.case_id)
                          .where(assignments_t.c.reader == reader)
                          .order_by(assignments_t.c.position))
        return [c for (c,) in rows]

    def ratings(self, reader: str | None = None) -> list[Rating]:
        stmt = select(ratings_t).order_by(ratings_t.c.reader, ratings_t.c.id)
        if reader is not None:
            stmt = stmt.where(ratings_t.c.reader == reader)
        return [Rating(reader=r.reader, case=r.case_id, score=int(r.score), shown_at=r.shown_at,
                       rated_at=r.rated_at, duration_s=r.duration_s, source=r.source,
                       changes=int(r.changes))
                for r in self._read(stmt)]

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
        """Per reader: cases rated / assigned, started, last activity. No scores."""
        totals = dict(self._read(select(assignments_t.c.reader, func.count())
                                 .group_by(assignments_t.c.reader)))
        done = dict(self._read(select(ratings_t.c.reader, func.count())
                               .group_by(ratings_t.c.reader)))
        last = dict(self._read(select(audit_t.c.reader, func.max(audit_t.c.at))
                               .where(audit_t.c.reader.is_not(None))
                               .group_by(audit_t.c.reader)))
        started = {r for (r,) in self._read(select(audit_t.c.reader).distinct()
                                            .where(audit_t.c.event == "started"))}
        return [ReaderProgress(reader=r, done=int(done.get(r, 0)), total=int(totals.get(r, 0)),
                               started=r in started or done.get(r, 0) > 0,
                               last_activity=last.get(r))
                for r in self.readers()]

    def audit(self, reader: str | None = None) -> list[dict]:
        stmt = select(audit_t).order_by(audit_t.c.id)
        if reader is not None:
            stmt = stmt.where(audit_t.c.reader == reader)
        return [{"id": r.id, "at": r.at, "event": r.event, "reader": r.reader,
                 "case": r.case_id, "detail": json.loads(r.detail) if r.detail else None}
                for r in self._read(stmt)]

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
            with self._writer.begin() as conn:
                self._event(conn, event_name, reader, case, detail or None)
        except SQLAlchemyError as exc:
            raise StudyError(f"database {self._where()}: cannot write the audit log "
                             f"({exc})") from None

    def _check_assigned(self, conn, reader: str, case: str) -> None:
        row = conn.execute(select(assignments_t.c.position).where(
            assignments_t.c.reader == reader, assignments_t.c.case_id == case)).first()
        if row is None:
            raise StudyError(f"case {case!r} is not assigned to reader {reader!r}")

    def record_rating(self, reader: str, case: str, score: int, *, shown_at: str | None = None,
                      duration_s: float | None = None, source: str = "app",
                      detail: dict | None = None) -> bool:
        """Store the first rating of (reader, case) and its ``rated`` audit event, committed.

        Returns
        -------
        bool
            True if stored; False if the reader had already rated the case (the earlier rating
            is kept and a ``duplicate`` event is logged).
        """
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                self._check_assigned(conn, reader, case)
                conn.execute(ratings_t.insert().values(
                    reader=reader, case_id=case, score=int(score), shown_at=shown_at,
                    rated_at=now, duration_s=duration_s, source=source, changes=0))
                self._event(conn, "rated", reader, case,
                            {"score": int(score), "duration_s": duration_s, "source": source,
                             **(detail or {})}, at=now)
            return True
        except IntegrityError:
            self.log("duplicate", reader, case, score=int(score), source=source)
            return False
        except SQLAlchemyError as exc:
            raise StudyError(f"database {self._where()}: the rating of case {case!r} by "
                             f"{reader!r} could not be saved ({exc})") from None

    def change_rating(self, reader: str, case: str, score: int, *,
                      duration_s: float | None = None) -> int:
        """Replace an existing rating (only when the protocol allows going back).

        Returns the previous score; logs a ``changed`` event with old and new scores.
        """
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                row = conn.execute(select(ratings_t.c.score).where(
                    ratings_t.c.reader == reader, ratings_t.c.case_id == case)).first()
                if row is None:
                    raise StudyError(f"reader {reader!r} has not rated case {case!r} yet; "
                                     "nothing to change")
                old = int(row[0])
                conn.execute(update(ratings_t)
                             .where(ratings_t.c.reader == reader, ratings_t.c.case_id == case)
                             .values(score=int(score), rated_at=now,
                                     changes=ratings_t.c.changes + 1))
                self._event(conn, "changed", reader, case,
                            {"old": old, "new": int(score), "duration_s": duration_s}, at=now)
            return old
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise StudyError(f"database {self._where()}: the change of case {case!r} by "
                             f"{reader!r} could not be saved ({exc})") from None

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
            with self._writer.begin() as conn:
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
                        reader=reader, case_id=case, score=int(score), shown_at=None,
                        rated_at=now, duration_s=None, source="import", changes=0))
                    self._event(conn, "imported", reader, case,
                                {"score": int(score), "file": source}, at=now)
                    existing[(reader, case)] = int(score)
                    n_new += 1
        except StudyError:
            raise
        except SQLAlchemyError as exc:
            raise StudyError(f"database {self._where()}: import failed, nothing was written "
                             f"({exc})") from None
        return n_new, n_same

    def set_reader_token(self, reader: str, token_hash: str) -> None:
        """Replace a reader's token hash (the old link stops working)."""
        with self._writer.begin() as conn:
            res = conn.execute(update(readers_t).where(readers_t.c.name == reader)
                               .values(token_hash=token_hash))
            if res.rowcount != 1:
                raise StudyError(f"reader {reader!r} is not part of this study")
            self._event(conn, "token_reissued", reader, None, None)

    def set_coordinator_token(self, token_hash: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(update(meta_t).where(meta_t.c.key == "coordinator_token_hash")
                         .values(value=token_hash))
            self._event(conn, "token_reissued", None, None, {"role": "coordinator"})
