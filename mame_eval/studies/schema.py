"""The study database schema, its version, and the explicit upgrades between versions.

One schema serves SQLite and PostgreSQL (SQLAlchemy Core). The version is the ``schema_version``
row of ``meta``; :func:`check_version` refuses a database of another version with one line that
says what to do, and :func:`upgrade` (``mame-eval study upgrade``) migrates an older database in
one transaction -- nothing is ever migrated implicitly when a study is opened.

Versions
--------
1  readers, cases, assignments, ratings (final score, time to rating, number of changes), audit.
2  + ``views`` (per reader and case: first display, viewing time measured by the server across
   reloads and navigation, number of displays, the open display episode); ratings keep their
   history: ``first_score``, ``changed_at``, total viewing time ``view_s``, ``over_time``;
   the audit log is append-only on PostgreSQL too (a trigger, as on SQLite).

Tables (version 2)
------------------
``meta``         key/value: schema version, study name and id, coordinator token hash, ...
``readers``      name, SHA-256 of the reader's token, position in the reader list.
``cases``        the opaque case names (never the truth: the answer key lives in ``key.csv``).
``assignments``  (reader, case, position): each reader's case order.
``ratings``      one row per (reader, case) -- a UNIQUE constraint -- with the final ``score``,
                 the ``first_score``, ``changes``, when the case was first shown and first
                 rated, ``duration_s`` (viewing time until the first rating), ``view_s`` (total
                 viewing time, reviews included), ``over_time`` (1 when the protocol's time
                 limit was exceeded) and the ``source`` (``app`` or ``import``).
``views``        one row per (reader, case) displayed: ``first_shown_at`` (ISO) and
                 ``first_shown_s`` (epoch seconds), ``view_s`` (closed display episodes),
                 ``open_since_s`` (start of the episode in progress, NULL when none), ``n_shows``.
``audit``        every event with a UTC timestamp; append-only (triggers refuse UPDATE/DELETE).
"""

from __future__ import annotations

import json
from collections.abc import Callable

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
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from mame_eval.errors import StudyError

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "check_version",
    "create_schema",
    "metadata",
    "upgrade",
]

#: the version this code creates, reads and writes
SCHEMA_VERSION = 2
#: every table of the current schema
TABLES = ("meta", "readers", "cases", "assignments", "ratings", "views", "audit")

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
    Column("first_score", Integer),
    Column("changed_at", String(40)),
    Column("view_s", Float),
    Column("over_time", Integer, nullable=False, default=0, server_default="0"),
    UniqueConstraint("reader", "case_id", name="uq_one_rating_per_reader_case"),
    ForeignKeyConstraint(["reader", "case_id"], ["assignments.reader", "assignments.case_id"],
                         name="fk_rating_assignment"),
)
views_t = Table(
    "views", metadata,
    Column("reader", String(64), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("first_shown_at", String(40), nullable=False),
    Column("first_shown_s", Float, nullable=False),
    Column("view_s", Float, nullable=False, default=0.0),
    Column("open_since_s", Float),
    Column("n_shows", Integer, nullable=False, default=0),
    PrimaryKeyConstraint("reader", "case_id", name="pk_views"),
    ForeignKeyConstraint(["reader", "case_id"], ["assignments.reader", "assignments.case_id"],
                         name="fk_view_assignment"),
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
_POSTGRES_AUDIT_TRIGGERS = (
    "CREATE OR REPLACE FUNCTION mame_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
    "FOR EACH ROW EXECUTE FUNCTION mame_audit_append_only()",
)


def _audit_triggers(conn: Connection) -> None:
    name = conn.dialect.name
    ddl = (_SQLITE_AUDIT_TRIGGERS if name == "sqlite" else
           _POSTGRES_AUDIT_TRIGGERS if name == "postgresql" else ())
    for statement in ddl:
        conn.exec_driver_sql(statement)


def create_schema(conn: Connection) -> None:
    """Create every table of the current schema (and the audit triggers) in ``conn``'s
    transaction; the caller writes ``schema_version`` into ``meta``."""
    metadata.create_all(conn)
    _audit_triggers(conn)


def stored_version(conn: Connection) -> int | None:
    """The ``schema_version`` in ``meta`` (None when there are no study tables)."""
    if "meta" not in inspect(conn).get_table_names():
        return None
    row = conn.execute(select(meta_t.c.value).where(meta_t.c.key == "schema_version")).first()
    if row is None:
        return None
    try:
        return int(row[0])
    except ValueError:
        raise StudyError(f"the study database has an unreadable schema version {row[0]!r}") \
            from None


def check_version(version: int | None, where: str) -> None:
    """Raise one clear StudyError unless ``version`` is :data:`SCHEMA_VERSION`."""
    if version is None:
        raise StudyError(f"database {where}: no study tables found (not created by "
                         "`mame-eval study create`?)")
    if version < SCHEMA_VERSION:
        raise StudyError(f"database {where}: schema version {version}, this mame-eval uses "
                         f"{SCHEMA_VERSION}; run `mame-eval study upgrade STUDY` once (it "
                         "keeps every rating) before using the study")
    if version > SCHEMA_VERSION:
        raise StudyError(f"database {where}: schema version {version} was written by a newer "
                         f"mame-eval (this one reads version {SCHEMA_VERSION}); upgrade mame-eval")


# --------------------------------------------------------------------------------------------
# upgrades: MIGRATIONS[v] turns version v into v + 1 inside the caller's transaction
# --------------------------------------------------------------------------------------------


def _v1_to_v2(conn: Connection) -> None:
    for column, ddl_type in (("first_score", "INTEGER"), ("changed_at", "VARCHAR(40)"),
                             ("view_s", "FLOAT"), ("over_time", "INTEGER NOT NULL DEFAULT 0")):
        conn.exec_driver_sql(f"ALTER TABLE ratings ADD COLUMN {column} {ddl_type}")
    views_t.create(conn)
    # the history that version 1 kept only in the audit log
    first: dict[tuple[str, str], dict] = {}
    for reader, case, detail in conn.execute(
            select(audit_t.c.reader, audit_t.c.case_id, audit_t.c.detail)
            .where(audit_t.c.event == "rated").order_by(audit_t.c.id)):
        first.setdefault((reader, case), json.loads(detail) if detail else {})
    rows = conn.execute(select(ratings_t.c.id, ratings_t.c.reader, ratings_t.c.case_id,
                               ratings_t.c.score, ratings_t.c.duration_s,
                               ratings_t.c.shown_at)).all()
    for rid, reader, case, score, duration, shown_at in rows:
        d = first.get((reader, case), {})
        conn.execute(update(ratings_t).where(ratings_t.c.id == rid).values(
            first_score=int(d.get("score", score)), view_s=duration,
            over_time=1 if d.get("over_time") else 0))
        if shown_at:
            conn.execute(views_t.insert().values(
                reader=reader, case_id=case, first_shown_at=shown_at, first_shown_s=0.0,
                view_s=float(duration or 0.0), open_since_s=None, n_shows=1))
    if conn.dialect.name == "postgresql":
        for statement in _POSTGRES_AUDIT_TRIGGERS:
            conn.exec_driver_sql(statement)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}


def upgrade(conn: Connection) -> tuple[int, int]:
    """Migrate the database of ``conn`` (inside its transaction) to :data:`SCHEMA_VERSION`.

    Returns
    -------
    (from_version, to_version); equal when there was nothing to do.
    """
    version = stored_version(conn)
    if version is None:
        raise StudyError("no study tables found: nothing to upgrade")
    if version > SCHEMA_VERSION:
        check_version(version, "")
    start = version
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn)
        version += 1
    if version != start:
        conn.execute(update(meta_t).where(meta_t.c.key == "schema_version")
                     .values(value=str(version)))
        conn.execute(audit_t.insert().values(
            at=_utcnow(), event="schema_upgraded", reader=None, case_id=None,
            detail=json.dumps({"from": start, "to": version})))
    return start, version


def _utcnow() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def dump_all(conn: Connection) -> str:
    """Every row of every study table as text (tests look for leaks in it)."""
    out = []
    for name in TABLES:
        if name in inspect(conn).get_table_names():
            out += [f"{name}: {tuple(r)}" for r in conn.execute(text(f"SELECT * FROM {name}"))]
    return "\n".join(out)
