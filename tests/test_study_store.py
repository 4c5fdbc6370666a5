"""The study database and the reading rules, against SQLite and a real PostgreSQL server.

Time is the server's: a manual clock replaces ``StudyStore.clock``, so that "shown for 0.2 s"
or "9 s in total across a reload and a detour" are exact. Every test that takes ``db_url`` runs
twice, on the study's own SQLite file and on a fresh PostgreSQL database (``tests/pg_server.py``:
initdb + postgres from Debian's package; under CI=1 a missing server fails these tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
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
)
from typer.testing import CliRunner

from mame_eval.errors import StudyError
from mame_eval.studies import design, reading
from mame_eval.studies.commands import study_app
from mame_eval.studies.protocol import default_protocol, dumps_toml
from mame_eval.studies.store import RatingRejected, StudyStore, redact_url
from mame_eval.studies.study import (
    analyze_study,
    create_study,
    export_ratings,
    long_ratings,
    open_study,
    reissue_token,
    upgrade_study,
)

pytest_plugins = ["pg_server"]

N = 8


class Clock:
    """A manual clock (epoch seconds) for ``StudyStore.clock``."""

    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def tick(self, dt: float) -> None:
        self.t += dt


@pytest.fixture()
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(StudyStore, "clock", staticmethod(c))
    return c


def _pngs(folder: Path, n: int, seed: int, prefix: str = "img") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray((rng.random((24, 20)) * 255).astype(np.uint8)).save(
            folder / f"{prefix}{i:03d}.png")
    return folder


def _study(tmp_path: Path, db_url: str | None, name: str = "st", readers="alice,bob",
           **proto_changes):
    protocol = None
    if proto_changes:
        protocol = tmp_path / f"{name}.toml"
        protocol.write_text(dumps_toml({**default_protocol().to_dict(), **proto_changes}))
    res = create_study(tmp_path / name, _pngs(tmp_path / f"{name}_r", 6, 1, "realsrc"),
                       _pngs(tmp_path / f"{name}_s", 6, 2, "synsrc"), n=N, readers=readers, seed=3,
                       protocol=protocol, db=db_url)
    return res, open_study(res.path, db_url)


def _token(link: str) -> str:
    return link.split("token=")[1]


# --------------------------------------------------------------------------------------------
# server-side time, minimum viewing time, the case on screen, tokens
# --------------------------------------------------------------------------------------------


def test_time_is_measured_by_the_server_across_reloads_and_navigation(tmp_path, db_url, clock):
    res, st = _study(tmp_path, db_url, time_limit_s=8)
    with st.store() as s:
        c1, c2 = s.assignments("alice")[:2]
        v = s.open_view("alice", c1)
        assert v.new_episode and v.view_s == 0 and v.n_shows == 1
        clock.tick(5)
        v = s.open_view("alice", c1)  # a reload: the same episode goes on, nothing restarts
        assert not v.new_episode and v.view_s == pytest.approx(5) and v.n_shows == 1
        clock.tick(2)
        s.open_view("alice", c2)  # going elsewhere closes the first episode at 7 s
        assert s.view_state("alice", c1).view_s == pytest.approx(7)
        clock.tick(30)
        v = s.open_view("alice", c1)  # back again: 7 s so far, a second episode
        assert v.new_episode and v.view_s == pytest.approx(7) and v.n_shows == 2
        assert s.view_state("alice", c2).view_s == pytest.approx(30)
        clock.tick(2)
        out = s.record_rating("alice", c1, 3, min_view_s=0.5, time_limit_s=8)
        assert out.stored and out.duration_s == pytest.approx(9) and out.over_time
        (r,) = s.ratings("alice")
        assert r.duration_s == pytest.approx(9) and r.over_time and r.first_score == 3
        shown = [e for e in s.audit("alice") if e["event"] == "shown"]
        assert [e["case"] for e in shown] == [c1, c2, c1]  # reloads are not new displays


def test_a_rating_needs_its_case_on_screen_for_the_minimum_time(tmp_path, db_url, clock):
    res, st = _study(tmp_path, db_url)
    with st.store() as s:
        c1, c2 = s.assignments("bob")[:2]
        with pytest.raises(RatingRejected) as err:
            s.record_rating("bob", c1, 2, min_view_s=0.5)
        assert err.value.reason == "not_shown"
        s.open_view("bob", c1)
        clock.tick(0.2)
        with pytest.raises(RatingRejected) as err:
            s.record_rating("bob", c1, 2, min_view_s=0.5)
        assert err.value.reason == "too_fast" and "0.20 s" in str(err.value)
        s.open_view("bob", c2)  # another case is on screen now: c1 cannot be rated
        clock.tick(5)
        with pytest.raises(RatingRejected) as err:
            s.record_rating("bob", c1, 2, min_view_s=0.5)
        assert err.value.reason == "not_shown"
        assert s.ratings("bob") == []
        assert s.record_rating("bob", c2, 1, min_view_s=0.5)
        assert [r.case for r in s.ratings("bob")] == [c2]


def test_a_revoked_token_stops_at_the_next_rating(tmp_path, db_url, clock):
    res, st = _study(tmp_path, db_url)
    old = _token(res.reader_links["alice"])
    with st.store() as s:
        c1, c2 = s.assignments("alice")[:2]
        s.open_view("alice", c1)
        clock.tick(1)
        assert s.record_rating("alice", c1, 4, token_hash=design.hash_token(old), min_view_s=0.5)
    new_link = reissue_token(st, "alice")
    with st.store() as s:
        s.open_view("alice", c2)
        clock.tick(1)
        with pytest.raises(RatingRejected) as err:
            s.record_rating("alice", c2, 4, token_hash=design.hash_token(old), min_view_s=0.5)
        assert err.value.reason == "revoked"
        assert s.record_rating("alice", c2, 4, token_hash=design.hash_token(_token(new_link)),
                               min_view_s=0.5)
        assert len(s.ratings("alice")) == 2


def test_submit_rating_says_why_a_press_was_not_stored(tmp_path, db_url, clock):
    res, st = _study(tmp_path, db_url)
    proto = st.protocol
    tok = _token(res.reader_links["alice"])
    with st.store() as s:
        scr = reading.current_screen(s, proto, "alice")
        assert scr.position == 0 and scr.case == s.assignments("alice")[0]
        assert scr.case not in scr.view_id  # opaque to the page
        out = reading.submit_rating(s, proto, "alice", tok, {"view": scr.view_id, "score": 3})
        assert (out.stored, out.kind) == (False, "warn") and "0.5 s minimum" in out.message
        clock.tick(0.6)
        for bad, words in (({"view": scr.view_id, "score": 9}, "not on this study's scale"),
                           ({"view": "nope", "score": 3}, "did not name one of your cases"),
                           ({"view": scr.view_id, "score": True}, "scale"),
                           ("junk", "could not be read")):
            out = reading.submit_rating(s, proto, "alice", tok, bad)
            assert not out.stored and words in out.message
        out = reading.submit_rating(s, proto, "alice", tok,
                                    {"view": scr.view_id, "score": 3, "via": "key"})
        assert out.stored and out.kind == "ok"
        # the next case's display opened in the rating's own transaction (one commit)
        second = s.assignments("alice")[1]
        v = s.view_state("alice", second)
        assert v is not None and v.n_shows == 1 and v.view_s == 0
        # a second window that still shows the same case: the first rating is kept
        out = reading.submit_rating(s, proto, "alice", tok, {"view": scr.view_id, "score": 0})
        assert not out.stored and "already been rated" in out.message
        nxt = reading.current_screen(s, proto, "alice")
        assert nxt.position == 1 and nxt.done == 1
        # bob's page cannot rate alice's case, even knowing its view id
        out = reading.submit_rating(s, proto, "bob", _token(res.reader_links["bob"]),
                                    {"view": nxt.view_id, "score": 1})
        assert not out.stored
        assert [(r.reader, r.score) for r in s.ratings()] == [("alice", 3)]
        rated = [e for e in s.audit("alice") if e["event"] == "rated"]
        assert rated[0]["detail"]["via"] == "key"


def test_rating_history_is_kept_exported_and_analysed(tmp_path, db_url, clock):
    res, st = _study(tmp_path, db_url, allow_back=True, time_limit_s=10, readers="alice")
    proto, tok = st.protocol, _token(res.reader_links["alice"])
    with st.store() as s:
        order = s.assignments("alice")
        for i, case in enumerate(order):
            scr = reading.current_screen(s, proto, "alice")
            assert scr.case == case
            clock.tick(12 if i == 0 else 1)  # the first case goes over the time limit
            truth_like = 4 if i % 2 else 0
            assert reading.submit_rating(s, proto, "alice", tok,
                                         {"view": scr.view_id, "score": truth_like}).stored
        # go back to the first case twice and change it
        for new in (2, 1):
            scr = reading.current_screen(s, proto, "alice", review=order[0])
            assert scr.mode == "review" and scr.view.n_shows >= 2
            clock.tick(1)
            out = reading.submit_rating(s, proto, "alice", tok,
                                        {"view": scr.view_id, "score": new}, review=order[0])
            assert out.stored and "changed" in out.message
        r = {x.case: x for x in s.ratings("alice")}[order[0]]
        assert (r.first_score, r.score, r.changes, r.over_time) == (0, 1, 2, True)
        assert r.duration_s == pytest.approx(12) and r.view_s == pytest.approx(14)
    df = long_ratings(st)
    row = df.set_index("case").loc[order[0]]
    assert (row["first_score"], row["final_score"], row["score"], row["changes"],
            row["over_time"]) == (0, 1, 1, 2, 1)
    assert list(pd.read_csv(export_ratings(st, "long")).columns) == list(df.columns)
    imrmc = export_ratings(st, "imrmc")
    hist = pd.read_csv(imrmc.with_name(imrmc.name + ".history.csv"))
    assert {"first_score", "final_score", "changes", "view_s", "over_time"} <= set(hist.columns)
    assert "the final score" in imrmc.read_text()
    final = analyze_study(st, out=tmp_path / "a_final")
    first = analyze_study(st, out=tmp_path / "a_first", score="first")
    assert final.results["score_used"] == "final" and first.results["score_used"] == "first"
    h = final.results["readers"]["alice"]["history"]
    assert (h["n_changed"], h["n_changes"], h["n_over_time"]) == (1, 2, 1)
    assert "over t" in final.table and "the first score" in first.table


def test_concurrent_threads_and_processes_lose_nothing(tmp_path, db_url):
    res, st = _study(tmp_path, db_url, readers="ann,ben,cat,dan")
    readers = ["ann", "ben", "cat", "dan"]
    with st.store() as s:
        orders = {r: s.assignments(r) for r in readers}
    barrier = threading.Barrier(len(readers))
    errors = []

    def rate(reader):
        try:
            s = st.store(shared=True)
            barrier.wait()
            for case in orders[reader][:N // 2]:
                s.open_view(reader, case)
                assert s.record_rating(reader, case, 2)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    code = ("import sys; from mame_eval.studies.store import StudyStore\n"
            "r = sys.argv[2]\n"
            "with StudyStore(sys.argv[1]) as s:\n"
            "    for c in s.assignments(r)[len(s.assignments(r)) // 2:]:\n"
            "        assert s.record_rating(r, c, 3)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, st.db_url, r]) for r in readers]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(readers)
    with st.store() as s:
        ratings = s.ratings()
        assert len(ratings) == len(readers) * N
        assert len({(r.reader, r.case) for r in ratings}) == len(readers) * N
        assert s.count_events("rated") == len(readers) * N


# --------------------------------------------------------------------------------------------
# blinding of the database, credentials
# --------------------------------------------------------------------------------------------


def test_the_database_holds_no_source_names_and_only_token_hashes(tmp_path, db_url):
    res, st = _study(tmp_path, db_url)
    with st.store() as s:
        dump = s.dump()
    for word in ("realsrc", "synsrc", "st_r", "st_s", "real", "synthetic"):
        assert word not in dump
    tokens = [_token(x) for x in [*res.reader_links.values(), res.coordinator_link]]
    for t in tokens:
        assert t not in dump and design.hash_token(t) in dump
    key = pd.read_csv(res.path / "key.csv", dtype={"case": str})
    assert not any(str(v) in dump for v in key["source"])


def test_postgres_credentials_are_never_written_or_printed(tmp_path, pg_url, pg_server):
    password = pg_server.password
    runner = CliRunner()
    real, syn = _pngs(tmp_path / "r", 6, 1), _pngs(tmp_path / "s", 6, 2)
    out = tmp_path / "pg-study"
    cli = runner.invoke(study_app, ["create", "--real", str(real), "--synthetic", str(syn),
                                    "--n", "8", "--readers", "ann", "--seed", "1",
                                    "--out", str(out), "--db", pg_url])
    assert cli.exit_code == 0, cli.output
    assert password not in cli.output
    toml = (out / "study.toml").read_text()
    assert password not in toml and redact_url(pg_url) in toml
    for args in (["status", str(out), "--db", pg_url], ["status", str(out)],
                 ["status", str(out), "--db", pg_url.replace(password, "wrong")]):
        r = runner.invoke(study_app, args)
        text = r.output + str(r.exception or "")
        assert password not in text
    assert "pass --db" in str(runner.invoke(study_app, ["status", str(out)]).exception)
    bad = runner.invoke(study_app, ["status", str(out), "--db",
                                    pg_url.replace(password, "wrong")])
    assert bad.exit_code != 0 and "***" in str(bad.exception)
    assert json.loads(runner.invoke(study_app, ["status", str(out), "--db", pg_url,
                                                "--json"]).output)["n_cases"] == 8


# --------------------------------------------------------------------------------------------
# schema versions: explicit upgrades, other studies refused
# --------------------------------------------------------------------------------------------


def _v1_tables() -> MetaData:
    """The version-1 schema, frozen here as mame-eval 0.1 created it."""
    md = MetaData()
    Table("meta", md, Column("key", String(64), primary_key=True),
          Column("value", Text, nullable=False))
    Table("readers", md, Column("name", String(64), primary_key=True),
          Column("token_hash", String(64), nullable=False, unique=True),
          Column("rank", Integer, nullable=False),
          Column("created_at", String(40), nullable=False))
    Table("cases", md, Column("case_id", String(64), primary_key=True))
    Table("assignments", md, Column("reader", String(64), nullable=False),
          Column("case_id", String(64), nullable=False),
          Column("position", Integer, nullable=False),
          PrimaryKeyConstraint("reader", "case_id", name="pk_assignments"),
          UniqueConstraint("reader", "position", name="uq_assignment_position"),
          ForeignKeyConstraint(["reader"], ["readers.name"], name="fk_assignment_reader"),
          ForeignKeyConstraint(["case_id"], ["cases.case_id"], name="fk_assignment_case"))
    Table("ratings", md, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("reader", String(64), nullable=False),
          Column("case_id", String(64), nullable=False),
          Column("score", Integer, nullable=False), Column("shown_at", String(40)),
          Column("rated_at", String(40), nullable=False), Column("duration_s", Float),
          Column("source", String(16), nullable=False),
          Column("changes", Integer, nullable=False, default=0),
          UniqueConstraint("reader", "case_id", name="uq_one_rating_per_reader_case"),
          ForeignKeyConstraint(["reader", "case_id"],
                               ["assignments.reader", "assignments.case_id"],
                               name="fk_rating_assignment"))
    Table("audit", md, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("at", String(40), nullable=False), Column("event", String(32), nullable=False),
          Column("reader", String(64)), Column("case_id", String(64)), Column("detail", Text))
    return md


def _downgrade_to_v1(st) -> tuple[str, str]:
    """Rebuild the study's database as version 1 would have left it after two ratings, the
    first changed once (4 -> 1). Returns the two cases."""
    with st.store() as s:
        meta, readers = s.meta(), s.readers()
        hashes = {r: s.reader_token_hash(r) for r in readers}
        cases = s.case_ids()
        orders = {r: s.assignments(r) for r in readers}
        s.drop()
    engine = create_engine(st.db_url)
    md = _v1_tables()
    md.create_all(engine)
    t = md.tables
    c1, c2 = orders["alice"][:2]
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":  # version 1 made the audit append-only on SQLite
            for op in ("UPDATE", "DELETE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER audit_no_{op.lower()} BEFORE {op} ON audit BEGIN "
                    "SELECT RAISE(ABORT, 'the audit log is append-only'); END")
        conn.execute(t["meta"].insert(), [{"key": k, "value": v} for k, v in
                                          {**meta, "schema_version": "1"}.items()])
        conn.execute(t["readers"].insert(), [{"name": r, "token_hash": hashes[r], "rank": i,
                                              "created_at": "2024-01-01"}
                                             for i, r in enumerate(readers)])
        conn.execute(t["cases"].insert(), [{"case_id": c} for c in cases])
        conn.execute(t["assignments"].insert(), [{"reader": r, "case_id": c, "position": p}
                                                 for r, o in orders.items()
                                                 for p, c in enumerate(o)])
        conn.execute(t["ratings"].insert(), [
            {"reader": "alice", "case_id": c1, "score": 1, "shown_at": "2024-01-01T10:00:00",
             "rated_at": "2024-01-01T10:00:05", "duration_s": 5.0, "source": "app",
             "changes": 1},
            {"reader": "alice", "case_id": c2, "score": 3, "shown_at": "2024-01-01T10:00:06",
             "rated_at": "2024-01-01T10:01:40", "duration_s": 94.0, "source": "app",
             "changes": 0}])
        conn.execute(t["audit"].insert(), [
            {"at": "2024-01-01T10:00:05", "event": "rated", "reader": "alice", "case_id": c1,
             "detail": json.dumps({"score": 4, "duration_s": 5.0})},
            {"at": "2024-01-01T10:01:40", "event": "rated", "reader": "alice", "case_id": c2,
             "detail": json.dumps({"score": 3, "duration_s": 94.0, "over_time": True})},
            {"at": "2024-01-01T10:02:00", "event": "changed", "reader": "alice", "case_id": c1,
             "detail": json.dumps({"old": 4, "new": 1})}])
    engine.dispose()
    return c1, c2


def test_an_older_study_is_upgraded_explicitly_and_keeps_its_ratings(tmp_path, db_url):
    res, st = _study(tmp_path, db_url)
    c1, c2 = _downgrade_to_v1(st)
    with pytest.raises(StudyError, match="schema version 1.*study upgrade") as err:
        open_study(res.path, db_url)
    assert "\n" not in str(err.value)
    assert upgrade_study(res.path, db_url) == (1, 2)
    assert upgrade_study(res.path, db_url) == (2, 2)  # idempotent
    st = open_study(res.path, db_url)
    with st.store() as s:
        r = {x.case: x for x in s.ratings("alice")}
        assert (r[c1].first_score, r[c1].score, r[c1].changes) == (4, 1, 1)
        assert (r[c2].first_score, r[c2].over_time, r[c2].view_s) == (3, True, 94.0)
        with pytest.raises(Exception, match="append-only"), s.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM audit")
        assert s.count_events("schema_upgraded") == 1
        # the upgraded study works on: rate a third case through the app's rules
        case = reading.current_screen(s, st.protocol, "alice").case
        assert case == s.assignments("alice")[2]


def test_a_database_of_another_study_or_a_newer_schema_is_one_clear_error(tmp_path, db_url):
    res, st = _study(tmp_path, db_url, name="one")
    other, _ = _study(tmp_path, None, name="two")
    db = str(st.db_url) if db_url is None else db_url
    with pytest.raises(StudyError, match="belongs to study 'one', not 'two'") as err:
        open_study(other.path, db)
    assert "\n" not in str(err.value)
    with st.store() as s, s.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(StudyError, match="schema version 3 was written by a newer mame-eval"):
        open_study(res.path, db_url)
    with pytest.raises(StudyError, match="already holds study tables"):
        create_study(tmp_path / "three", tmp_path / "one_r", tmp_path / "one_s", n=N,
                     readers="x", seed=1, db=db)
    assert not (tmp_path / "three").exists()
