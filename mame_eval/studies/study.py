"""Reader studies end to end: create, serve, status, export, import, analyse.

A study folder (``studies/NAME``)::

    study.toml      [study] settings (seed, sizes, readers, database, server) + [protocol]
    cases/          blinded case images <16 hex digits>.png (see mame_eval.studies.design)
    key.csv         case, truth (1 = real, 0 = synthetic), source -- never served by the app
    blinding_audit.csv, blinding_audit.png/.pdf
                    can pixel statistics tell the classes apart? (mame_eval.studies.audit)
    study.db        SQLite database (mame_eval.studies.store); absent when --db names another
    exports/        ratings_long.csv, study.imrmc + study.imrmc.history.csv (study export)
    analysis/       results.json, readers.csv, roc.png, roc.pdf, table.txt, provenance.json

Every function here is library code: it returns results or raises
:class:`~mame_eval.errors.StudyError` (or another :class:`~mame_eval.errors.InputError`) with
one line that names the file / field / value at fault. ``create_study`` builds the folder in a
temporary sibling and renames it into place, so a failure never leaves a half-written study.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mame_eval.errors import ConfigError, InputError, StudyError
from mame_eval.io import file_sha256, write_text
from mame_eval.studies import design
from mame_eval.studies.audit import (
    AuditResult,
    audit_blinding,
    audit_warning,
    case_statistics,
    read_audit,
)
from mame_eval.studies.protocol import (
    Protocol,
    default_protocol,
    dumps_toml,
    load_protocol,
    load_toml,
    protocol_from_dict,
)
from mame_eval.studies.store import (
    ReaderProgress,
    StudyStore,
    normalize_url,
    redact_url,
    utcnow,
)

__all__ = [
    "LONG_COLUMNS",
    "AnalysisResult",
    "CreateResult",
    "ImportResult",
    "Study",
    "StudyStatus",
    "analyze_study",
    "create_study",
    "export_ratings",
    "format_status",
    "import_ratings",
    "link_port_warning",
    "long_ratings",
    "open_study",
    "read_key",
    "reissue_token",
    "serve",
    "serve_command",
    "study_status",
    "upgrade_study",
    "wait_until_ready",
    "write_analysis",
]

STUDY_TOML = "study.toml"
KEY_CSV = "key.csv"
CASES_DIR = "cases"
DB_FILE = "study.db"
APP_PATH = Path(__file__).with_name("app.py")
#: environment variables through which ``serve`` tells the app which study to open
ENV_STUDY = "MAME_EVAL_STUDY"
ENV_DB = "MAME_EVAL_STUDY_DB"
DEFAULT_PORT = 8501
DEFAULT_ADDRESS = "localhost"
_STUDY_KEYS = {"name", "created_at", "seed", "n_cases", "n_real", "n_synthetic", "ratio",
               "readers", "width", "height", "database", "address", "port", "base_url",
               "real_dir", "synthetic_dir", "mame_eval_version", "study_id",
               "native_sizes"}


# --------------------------------------------------------------------------------------------
# the study object
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """An opened study folder: its settings, protocol and database URL (no truth)."""

    path: Path
    settings: dict
    protocol: Protocol
    db_url: str

    @property
    def name(self) -> str:
        return str(self.settings.get("name", self.path.name))

    @property
    def cases_dir(self) -> Path:
        return self.path / CASES_DIR

    @property
    def key_path(self) -> Path:
        return self.path / KEY_CSV

    def case_path(self, case: str) -> Path:
        """Path of a case image; refuses names that are not plain case stems."""
        if not case or any(c not in "0123456789abcdef" for c in case):
            raise StudyError(f"{case!r} is not a case name of this study")
        return self.cases_dir / f"{case}.png"

    def store(self, *, shared: bool = False) -> StudyStore:
        return StudyStore(self.db_url, shared=shared)

    def base_url(self) -> str:
        s = self.settings
        if s.get("base_url"):
            return str(s["base_url"]).rstrip("/") + "/"
        return _base_url(str(s.get("address", DEFAULT_ADDRESS)), int(s.get("port", DEFAULT_PORT)))

    def link(self, token: str) -> str:
        return f"{self.base_url()}?token={token}"


def _base_url(address: str, port: int) -> str:
    host = address
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def open_study(path: Path | str, db: str | None = None, *, check_schema: bool = True) -> Study:
    """Open a study folder (checks ``study.toml``, ``cases/`` and the database; not the key).

    Parameters
    ----------
    path : study folder; a bare NAME also finds ``studies/NAME``.
    db : SQLAlchemy URL of the database when it is not ``study.db`` (``--db``); defaults to
        ``$MAME_EVAL_STUDY_DB`` and then to ``study.db`` in the folder.
    check_schema : refuse a database of another schema version or of another study (only
        :func:`upgrade_study` opens an older one).
    """
    path = Path(path)
    if not path.is_dir() and len(path.parts) == 1 and (Path("studies") / path).is_dir():
        path = Path("studies") / path  # `mame-eval study status NAME` for studies/NAME
    toml_path = path / STUDY_TOML
    if not path.is_dir():
        raise StudyError(f"{path}: study folder not found")
    if not toml_path.is_file():
        raise StudyError(f"{path}: no {STUDY_TOML} here; is this a study folder made by "
                         "`mame-eval study create`?")
    data = load_toml(toml_path)
    unknown = set(data) - {"study", "protocol"}
    if unknown:
        raise ConfigError(f"{toml_path}: unknown table {sorted(unknown)[0]!r}; expected [study] "
                          "and [protocol]")
    settings = data.get("study")
    if not isinstance(settings, dict):
        raise ConfigError(f"{toml_path}: missing the [study] table")
    bad = set(settings) - _STUDY_KEYS
    if bad:
        raise ConfigError(f"{toml_path}: unknown key {sorted(bad)[0]!r} in [study]; allowed "
                          f"keys: {', '.join(sorted(_STUDY_KEYS))}")
    protocol = protocol_from_dict(data.get("protocol"), source=f"{toml_path} [protocol]")
    if not (path / CASES_DIR).is_dir():
        raise StudyError(f"{path}: the {CASES_DIR}/ folder is missing")
    db = db or os.environ.get(ENV_DB) or None
    database = str(settings.get("database", "sqlite"))
    if db is None:
        if database != "sqlite":
            raise StudyError(f"{path}: this study's database is {database}; pass --db with its "
                             "full URL (password included)")
        db_path = path / DB_FILE
        if not db_path.is_file():
            raise StudyError(f"{db_path}: database file not found")
        db = _sqlite_url(db_path)
    study = Study(path=path, settings=settings, protocol=protocol, db_url=normalize_url(db))
    if check_schema:
        with study.store() as store:
            store.check()
            _check_owner(study, store.meta())
    return study


def _check_owner(study: Study, meta: dict[str, str]) -> None:
    """The database must be this study's: same name and, when both record one, same id."""
    where = redact_url(study.db_url)
    if meta.get("study_name") != study.name:
        raise StudyError(f"database {where} belongs to study {meta.get('study_name')!r}, not "
                         f"{study.name!r}")
    mine, theirs = study.settings.get("study_id"), meta.get("study_id")
    if mine and theirs and mine != theirs:
        raise StudyError(f"database {where} belongs to another study also named "
                         f"{study.name!r} (study id {theirs}, this folder's is {mine})")


def _as_study(study: Study | Path | str, db: str | None = None) -> Study:
    return study if isinstance(study, Study) else open_study(study, db)


# --------------------------------------------------------------------------------------------
# create
# --------------------------------------------------------------------------------------------


@dataclass
class CreateResult:
    """What :func:`create_study` made. The links hold the only copy of the tokens."""

    path: Path
    n_real: int
    n_synthetic: int
    seed: int
    width: int
    height: int
    reader_links: dict[str, str]
    coordinator_link: str
    warnings: list[str] = field(default_factory=list)
    audit: AuditResult | None = None
    audit_files: list[Path] = field(default_factory=list)

    @property
    def audit_warning(self) -> str | None:
        """One line naming the pixel statistics that separate the classes (None: none)."""
        return audit_warning(self.audit) if self.audit is not None else None


def _parse_size(size) -> tuple[int, int] | None:
    """None, an int (square), (height, width) or 'HxW' -> (width, height)."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, str):
        try:
            parts = [int(v) for v in size.lower().split("x")]
        except ValueError:
            raise StudyError(f"--size {size!r}: expected HEIGHTxWIDTH or one number") from None
        if len(parts) == 1:
            return (parts[0], parts[0])
        if len(parts) != 2:
            raise StudyError(f"--size {size!r}: expected HEIGHTxWIDTH or one number")
        return (parts[1], parts[0])
    h, w = size
    return (int(w), int(h))


def _size_summary(cases: list[design.SampledCase], sizes: list[tuple[int, int]],
                  truth: int) -> str:
    counts: dict[tuple[int, int], int] = {}
    for c, sz in zip(cases, sizes, strict=True):
        if c.truth == truth:
            counts[sz] = counts.get(sz, 0) + 1
    return ", ".join(f"{h}x{w} ({k})" for (w, h), k in sorted(counts.items(),
                                                              key=lambda kv: -kv[1]))


def _require_common_size(cases: list[design.SampledCase], sizes: list[tuple[int, int]],
                         size: tuple[int, int] | None) -> None:
    """Different native sizes need an explicit ``--size``: never shrink or enlarge silently."""
    if size is not None or len(set(sizes)) == 1:
        return
    real = _size_summary(cases, sizes, 1)
    syn = _size_summary(cases, sizes, 0)
    largest = max(sizes, key=lambda s: s[0] * s[1])
    smallest = min(sizes, key=lambda s: s[0] * s[1])
    raise StudyError(
        f"--size: the images differ in native size (HxW; real: {real}; synthetic: {syn}) and "
        "resampling only some of them can itself tell readers the source; choose the common "
        f"size explicitly, e.g. --size {largest[1]}x{largest[0]} (enlarges the smaller ones) "
        f"or --size {smallest[1]}x{smallest[0]} (shrinks the larger ones); the blinding audit "
        "then measures the trace either way")


def create_study(out: Path | str, real: Path | str, synthetic: Path | str, n: int,
                 readers: list[str] | str, *, ratio: float = 0.5, seed: int | None = None,
                 protocol: Path | str | Protocol | None = None, size=None,
                 db: str | None = None, address: str = DEFAULT_ADDRESS,
                 port: int = DEFAULT_PORT, base_url: str | None = None,
                 progress=None) -> CreateResult:
    """Create a blinded real-vs-synthetic reader study in the new folder ``out``.

    Parameters
    ----------
    out : the study folder to create; must not exist (or be empty).
    real, synthetic : folders of images (truth 1 = real, 0 = synthetic).
    n : number of cases; ``round(n * ratio)`` real, the rest synthetic.
    readers : reader names (list or comma-separated string).
    seed : seed of sampling, case names and reader orders (random and recorded when None).
    protocol : a protocol TOML path or :class:`Protocol` (default: the paper's 0-4 scale).
    size : common case size, ``"HxW"``, an int or (height, width). Cases are served at the
        size they are created at; when the sampled images differ in native size this choice
        is required (nothing is shrunk or enlarged silently), otherwise it defaults to the
        native size.
    db : SQLAlchemy URL of another database than ``study.db`` (e.g. PostgreSQL); only its
        password-less form is written to ``study.toml``.
    address, port : where ``serve`` will listen by default; the links use them unless
        ``base_url`` (e.g. ``https://reading.example.org/study/``) is given.
    progress : optional ``progress(done, total)`` called while the cases are blinded.

    Returns
    -------
    CreateResult with every reader's private link and the coordinator link (shown once: only
    hashes of the tokens are stored), the resampling warnings and the blinding audit
    (``blinding_audit.csv`` and its figure are written into the study folder).
    """
    out = Path(out)
    if isinstance(readers, str):
        readers = readers.split(",")
    names = design.check_reader_names(readers)
    if isinstance(protocol, Protocol):
        proto = protocol
    elif protocol is None:
        proto = default_protocol()
    else:
        proto = load_protocol(protocol)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StudyError(f"--out {out}: already exists; a study folder is never overwritten "
                         "(choose a new name)")
    if not 1 <= int(port) <= 65535:
        raise StudyError(f"--port {port}: expected 1 … 65535")
    real_dir, syn_dir = Path(real), Path(synthetic)
    real_files = design.list_images(real_dir, "--real")
    syn_files = design.list_images(syn_dir, "--synthetic")
    if real_dir.resolve() == syn_dir.resolve():
        raise StudyError(f"--real and --synthetic are the same folder ({real_dir})")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise StudyError(f"--seed {seed}: expected a whole number >= 0")
    seed = int(seed)
    rng = np.random.default_rng([seed, 1])
    sampled = design.sample_cases(real_files, syn_files, n, ratio, rng)
    design.check_duplicates(sampled)
    native = [design.image_size(c.source) for c in sampled]
    requested = _parse_size(size)
    _require_common_size(sampled, native, requested)
    geometry = design.choose_geometry(native, requested)
    names_rng = np.random.default_rng([seed, 2])
    case_names = design.case_names(len(sampled), names_rng)
    blinded = [design.BlindedCase(case=nm, truth=c.truth, source=c.source)
               for nm, c in zip(case_names, sampled, strict=True)]
    native_of = {b.case: sz for b, sz in zip(blinded, native, strict=True)}
    blinded.sort(key=lambda b: b.case)  # name order is random with respect to the truth
    orders = design.reader_orders([b.case for b in blinded], names, seed)
    tokens = {r: design.new_token() for r in names}
    coordinator_token = design.new_token()
    study_id = design.new_token()[:16]

    external_db = db is not None
    created_at = utcnow()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".creating", dir=out.parent))
    db_created = False
    try:
        cases_dir = tmp / CASES_DIR
        cases_dir.mkdir()
        mtime = float(int(time.time()))
        stats_rows = []
        for i, b in enumerate(blinded):
            pixels = design.blind_image(b.source, geometry)
            design.write_case_png(cases_dir / f"{b.case}.png", pixels, mtime)
            nw, nh = native_of[b.case]
            stats_rows.append({**case_statistics(pixels), "native_width": nw,
                               "native_height": nh,
                               "resample_factor": math.sqrt(geometry.width * geometry.height
                                                            / (nw * nh))})
            if progress is not None:
                progress(i + 1, len(blinded))
        key = pd.DataFrame({"case": [b.case for b in blinded],
                            "truth": [b.truth for b in blinded],
                            "source": [str(b.source.resolve()) for b in blinded]})
        key.to_csv(tmp / KEY_CSV, index=False)
        audit = audit_blinding(pd.DataFrame(stats_rows), key["truth"].to_numpy(), seed=seed)
        from mame_eval.studies.audit import write_audit

        audit_files = write_audit(audit, tmp)
        from mame_eval import __version__

        settings: dict[str, Any] = {
            "name": out.name, "study_id": study_id, "created_at": created_at, "seed": seed,
            "n_cases": len(blinded), "n_real": sum(b.truth for b in blinded),
            "n_synthetic": sum(1 - b.truth for b in blinded), "ratio": float(ratio),
            "readers": names, "width": geometry.width, "height": geometry.height,
            "native_sizes": sorted({f"{h}x{w}" for w, h in native}),
            "database": redact_url(db) if external_db else "sqlite",
            "address": address, "port": int(port),
            "real_dir": str(real_dir.resolve()), "synthetic_dir": str(syn_dir.resolve()),
            "mame_eval_version": __version__,
        }
        if base_url:
            settings["base_url"] = base_url
        write_text(tmp / STUDY_TOML, "# Reader study made by `mame-eval study create`; the "
                   "answer key is key.csv (never served).\n"
                   + dumps_toml({"study": settings, "protocol": proto.to_dict()}))
        url = normalize_url(db) if external_db else _sqlite_url(tmp / DB_FILE)
        with StudyStore(url) as store:
            db_created = True
            store.create(study_name=out.name, case_ids=[b.case for b in blinded], orders=orders,
                         token_hashes={r: design.hash_token(t) for r, t in tokens.items()},
                         coordinator_hash=design.hash_token(coordinator_token),
                         extra_meta={"seed": str(seed), "study_id": study_id})
        if out.exists():
            out.rmdir()  # empty (checked above); a non-empty one makes rename fail below
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if external_db and db_created:
            with contextlib.suppress(Exception):
                _drop_tables(db)
        raise
    study = Study(path=out, settings=settings, protocol=proto,
                  db_url=normalize_url(db) if external_db else _sqlite_url(out / DB_FILE))
    return CreateResult(
        path=out, n_real=settings["n_real"], n_synthetic=settings["n_synthetic"], seed=seed,
        width=geometry.width, height=geometry.height,
        reader_links={r: study.link(t) for r, t in tokens.items()},
        coordinator_link=study.link(coordinator_token), warnings=list(geometry.notes),
        audit=audit, audit_files=[out / p.name for p in audit_files])


def _drop_tables(url: str) -> None:
    with StudyStore(url) as store:
        store.drop()


def upgrade_study(study: Path | str, db: str | None = None) -> tuple[int, int]:
    """Migrate an older study database to this version's schema (explicit, one transaction).

    Returns (from_version, to_version); equal when it was up to date already.
    """
    st = open_study(study, db, check_schema=False)
    with st.store() as store:
        if not store.exists():
            raise StudyError(f"database {redact_url(st.db_url)}: no study tables found")
        _check_owner(st, store.meta())
        return store.upgrade()


def reissue_token(study: Study | Path | str, reader: str | None = None,
                  db: str | None = None) -> str:
    """Give ``reader`` (or the coordinator when None) a new token; return the new link.

    The old link stops working at once; the new token is shown only here.
    """
    st = _as_study(study, db)
    token = design.new_token()
    with st.store() as store:
        if reader is None:
            store.set_coordinator_token(design.hash_token(token))
        else:
            store.set_reader_token(reader, design.hash_token(token))
    return st.link(token)


# --------------------------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------------------------


def serve_command(study: Study | Path | str, port: int | None = None,
                  address: str | None = None, db: str | None = None
                  ) -> tuple[list[str], dict[str, str]]:
    """The ``python -m streamlit run`` command line and environment that serve a study."""
    st = _as_study(study, db)
    port = int(port if port is not None else st.settings.get("port", DEFAULT_PORT))
    address = address or str(st.settings.get("address", DEFAULT_ADDRESS))
    if not 1 <= port <= 65535:
        raise StudyError(f"--port {port}: expected 1 … 65535")
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.headless", "true",
        "--server.address", address,
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--server.enableStaticServing", "false",
        "--browser.gatherUsageStats", "false",
        "--global.developmentMode", "false",
        # Streamlit runs a full gc.collect(2) after every script run, holding the GIL; with
        # pandas, SQLAlchemy and the viewer's data in the heap that was ~0.1 s per rating, and
        # with a dozen readers every session queued behind the others' collections (the
        # measured multi-second stalls). Python's own generational GC still runs.
        "--runner.postScriptGC", "false",
        "--client.toolbarMode", "minimal",
        "--theme.base", "dark",
    ]
    env = dict(os.environ)
    env[ENV_STUDY] = str(st.path.resolve())
    env[ENV_DB] = st.db_url  # in the environment, not on the command line (passwords)
    return cmd, env


def _port_free(address: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise StudyError(f"--address {address!r}: unknown host name") from None
    for family, socktype, proto, _, sockaddr in infos[:1]:
        with socket.socket(family, socktype, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(sockaddr)
            except OSError:
                return False
    return True


def wait_until_ready(url: str, proc: subprocess.Popen | None = None,
                     timeout: float = 60.0) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok``.

    Raises StudyError when ``proc`` exits first or ``timeout`` seconds pass.
    """
    health = url.rstrip("/") + "/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StudyError(f"the study server exited with status {proc.returncode} before it "
                             "was ready (see its log)")
        try:
            with urllib.request.urlopen(health, timeout=2) as resp:  # noqa: S310 - local URL
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise StudyError(f"the study server did not answer at {health} within {timeout:.0f} s")


def serve(study: Study | Path | str, port: int | None = None, address: str | None = None,
          db: str | None = None, *, wait: bool = True, timeout: float = 60.0,
          log: Path | str | None = None) -> subprocess.Popen:
    """Start the Streamlit app for a study as a subprocess and return it.

    ``python -m streamlit run mame_eval/studies/app.py --server.headless true …`` with the
    study folder (and ``db``) passed in the environment. With ``wait`` the call returns once
    the server answers its health check. The caller owns the process: ``proc.wait()`` to
    serve until it stops, ``proc.terminate()`` to stop it. ``log``: file for the server's
    output (default: inherited stdout/stderr).
    """
    st = _as_study(study, db)
    cmd, env = serve_command(st, port, address, db)
    address = cmd[cmd.index("--server.address") + 1]
    port = int(cmd[cmd.index("--server.port") + 1])
    if not _port_free(address, port):
        raise StudyError(f"--port {port}: address {address}:{port} is already in use "
                         "(another server running? choose another --port)")
    stdout = None
    if log is not None:
        stdout = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=stdout,
                                stderr=subprocess.STDOUT if stdout else None,
                                stdin=subprocess.DEVNULL)
    finally:
        if stdout is not None:
            stdout.close()
    if wait:
        try:
            wait_until_ready(_base_url(address if address not in ("0.0.0.0", "::") else
                                       "127.0.0.1", port), proc, timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return proc


def link_port_warning(study: Study | Path | str, port: int | None,
                      db: str | None = None) -> str | None:
    """A warning when ``serve --port`` differs from the port the readers' links point to."""
    st = _as_study(study, db)
    if port is None or st.settings.get("base_url"):
        return None  # links through a proxy (base_url) may well use another port
    link_port = int(st.settings.get("port", DEFAULT_PORT))
    if int(port) == link_port:
        return None
    return (f"--port {port}: the readers' links point to port {link_port} ({st.base_url()}), "
            f"so they will not reach this server; serve on --port {link_port}, or put a proxy "
            f"at {st.base_url()} in front of it")


# --------------------------------------------------------------------------------------------
# status, key, long ratings, export, import
# --------------------------------------------------------------------------------------------


@dataclass
class StudyStatus:
    name: str
    n_cases: int
    readers: list[ReaderProgress]
    audit_warning: str | None = None
    time_limit_s: float | None = None

    @property
    def complete(self) -> bool:
        return all(r.finished for r in self.readers)

    def to_dict(self) -> dict:
        return {"name": self.name, "n_cases": self.n_cases, "complete": self.complete,
                "time_limit_s": self.time_limit_s,
                "readers": [{"reader": r.reader, "done": r.done, "total": r.total,
                             "started": r.started, "last_activity": r.last_activity,
                             "median_s_per_case": r.median_s, "over_time": r.over_time}
                            for r in self.readers],
                "blinding_audit_warning": self.audit_warning}


def study_status(study: Study | Path | str, db: str | None = None) -> StudyStatus:
    """Progress of every reader: counts, median time per case and over-time counts; no
    ratings, no truth. Repeats the blinding audit's warning when it found a leak."""
    st = _as_study(study, db)
    audit = read_audit(st.path)
    with st.store() as store:
        return StudyStatus(name=st.name, n_cases=len(store.case_ids()),
                           readers=store.progress(),
                           audit_warning=audit_warning(audit) if audit is not None else None,
                           time_limit_s=st.protocol.time_limit_s)


def format_status(status: StudyStatus) -> str:
    over = status.time_limit_s is not None
    lines = [f"study {status.name}: {status.n_cases} cases, {len(status.readers)} readers",
             f"{'reader':<20}{'rated':>12}  {'median s/case':>13}"
             + (f"{'over time':>11}" if over else "")
             + f"  {'last activity (UTC)':<21}state"]
    for r in status.readers:
        state = "finished" if r.finished else ("reading" if r.started else "not started")
        med = "-" if r.median_s is None else f"{r.median_s:.1f}"
        lines.append(f"{r.reader:<20}{f'{r.done} / {r.total}':>12}  {med:>13}"
                     + (f"{r.over_time:>11}" if over else "")
                     + f"  {(r.last_activity or '-')[:19].replace('T', ' '):<21}{state}")
    if status.audit_warning:
        lines += ["", "warning: " + status.audit_warning]
    return "\n".join(lines)


def read_key(study: Study | Path | str) -> pd.DataFrame:
    """The answer key (``case``, ``truth``, ``source``), checked against ``cases/``."""
    st = _as_study(study)
    path = st.key_path
    if not path.is_file():
        raise StudyError(f"{path}: answer key not found")
    try:
        key = pd.read_csv(path, dtype={"case": str, "source": str})
    except Exception as exc:
        raise StudyError(f"{path}: not a readable CSV ({exc})") from None
    missing = {"case", "truth", "source"} - set(key.columns)
    if missing:
        raise StudyError(f"{path}: missing column {sorted(missing)[0]!r}; expected case, truth, "
                         "source")
    if not key["truth"].isin([0, 1]).all():
        raise StudyError(f"{path}: column 'truth' must be 1 (real) or 0 (synthetic)")
    if key["case"].duplicated().any():
        raise StudyError(f"{path}: case {key['case'][key['case'].duplicated()].iloc[0]!r} "
                         "appears twice")
    on_disk = {p.stem for p in st.cases_dir.glob("*.png")}
    if set(key["case"]) != on_disk:
        diff = sorted(set(key["case"]) ^ on_disk)
        raise StudyError(f"{path}: the key and {st.cases_dir} disagree (e.g. case {diff[0]!r})")
    key["truth"] = key["truth"].astype(int)
    return key


#: columns of :func:`long_ratings` and of ``study export --format long``
LONG_COLUMNS = ["reader", "case", "truth", "score", "first_score", "final_score", "changes",
                "duration_s", "view_s", "over_time", "shown_at", "rated_at", "changed_at",
                "source"]


def _score_choice(st: Study, score: str | None) -> str:
    choice = st.protocol.score_used if score is None else score
    if choice not in ("first", "final"):
        raise StudyError(f"--score {choice!r}: expected first or final")
    return choice


def long_ratings(study: Study | Path | str, db: str | None = None,
                 score: str | None = None) -> pd.DataFrame:
    """Every stored rating joined with the truth and its history, long format.

    Columns (:data:`LONG_COLUMNS`): ``reader, case, truth``; ``score`` -- the score analysed,
    the protocol's ``score_used`` (``final`` unless it says ``first``) or ``score`` when given;
    ``first_score``, ``final_score``, ``changes`` (how often the reader changed it),
    ``duration_s`` (server-measured viewing time until the first rating), ``view_s`` (total
    viewing time), ``over_time`` (0/1: past the protocol's time limit), ``shown_at``,
    ``rated_at``, ``changed_at``, ``source``. One row per reader and case rated, readers in
    their study order, cases by name.
    """
    st = _as_study(study, db)
    choice = _score_choice(st, score)
    key = read_key(st)
    truth = dict(zip(key["case"], key["truth"], strict=True))
    with st.store() as store:
        ratings = store.ratings()
        readers = store.readers()
    rank = {r: i for i, r in enumerate(readers)}
    unknown = sorted({r.case for r in ratings} - set(truth))
    if unknown:
        raise StudyError(f"{st.key_path}: case {unknown[0]!r} has ratings in the database but "
                         "no truth in the key")
    rows = []
    for r in ratings:
        first = r.score if r.first_score is None else r.first_score
        rows.append({"reader": r.reader, "case": r.case, "truth": truth[r.case],
                     "score": first if choice == "first" else r.score, "first_score": first,
                     "final_score": r.score, "changes": r.changes, "duration_s": r.duration_s,
                     "view_s": r.view_s, "over_time": int(r.over_time),
                     "shown_at": r.shown_at, "rated_at": r.rated_at,
                     "changed_at": r.changed_at, "source": r.source})
    df = pd.DataFrame(rows, columns=LONG_COLUMNS)
    if not df.empty:
        df = df.assign(_r=df["reader"].map(rank)).sort_values(["_r", "case"]).drop(columns="_r")
    df.attrs["score_used"] = choice
    return df.reset_index(drop=True)


def _file_target(out: Path | str | None, default: Path) -> Path:
    if out is None:
        return default
    target = Path(out)
    if target.is_dir():
        raise StudyError(f"--out {target}: is a folder; expected a file name, e.g. "
                         f"{target / default.name}")
    return target


def export_ratings(study: Study | Path | str, fmt: str = "long", out: Path | str | None = None,
                   db: str | None = None) -> Path:
    """Write the ratings as ``long`` CSV (what ``mame-eval mrmc`` reads) or ``imrmc`` input.

    ``long``: the columns of :func:`long_ratings` -- every stored rating with its history.
    ``imrmc``: the iMRMC ``.imrmc`` format (NR/N0/N1/NM header, ``BEGIN DATA:``, truth rows
    ``-1,case,0,truth``, then ``reader,case,1,score``) with integer reader and case ids; the
    id -> name maps and the score used (protocol ``score_used``) are in the header text, the
    rating history (first and final score, changes, viewing time, over-time flag) in
    ``<file>.history.csv`` beside it. Only readers who rated every case are written to
    ``imrmc``.

    Returns the written file (default ``exports/ratings_long.csv`` / ``exports/study.imrmc``).
    """
    st = _as_study(study, db)
    if fmt not in ("long", "imrmc"):
        raise StudyError(f"--format {fmt!r}: expected long or imrmc")
    default = st.path / "exports" / ("ratings_long.csv" if fmt == "long" else "study.imrmc")
    target = _file_target(out, default)
    df = long_ratings(st)
    if df.empty:
        raise StudyError(f"{st.path}: no ratings yet; nothing to export")
    if fmt == "long":
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, df.to_csv(index=False))
        return target
    key = read_key(st)
    n = len(key)
    counts = df.groupby("reader")["case"].nunique()
    readers = [r for r in dict.fromkeys(df["reader"]) if counts[r] == n]
    if not readers:
        raise StudyError(f"{st.path}: no reader has rated all {n} cases yet; iMRMC needs "
                         "complete readers")
    key = key.sort_values(["truth", "case"]).reset_index(drop=True)
    case_id = {c: i + 1 for i, c in enumerate(key["case"])}
    reader_id = {r: i + 1 for i, r in enumerate(readers)}
    n0, n1 = int((key["truth"] == 0).sum()), int((key["truth"] == 1).sum())
    history = target.with_name(target.name + ".history.csv")
    lines = [f"mame-eval reader study {st.name}: real (truth 1) vs synthetic (truth 0); "
             f"protocol {st.protocol.name}, higher score = more likely real",
             f"score: the {df.attrs['score_used']} score of each rating (protocol score_used); "
             f"history (first/final score, changes, viewing time, over time) in {history.name}",
             "readers: " + ", ".join(f"{i} = {r}" for r, i in reader_id.items()),
             "cases: " + ", ".join(f"{i} = {c}" for c, i in case_id.items()),
             "modality: 1 = " + st.protocol.name, "",
             f"NR: {len(readers)}", f"N0: {n0}", f"N1: {n1}", "NM: 1", "", "BEGIN DATA:"]
    lines += [f"-1,{case_id[c]},0,{t}" for c, t in zip(key["case"], key["truth"], strict=True)]
    sub = df[df["reader"].isin(readers)]
    for r in readers:
        rs = sub[sub["reader"] == r].assign(_c=lambda d: d["case"].map(case_id)).sort_values("_c")
        lines += [f"{reader_id[r]},{c},1,{s}" for c, s in zip(rs["_c"], rs["score"], strict=True)]
    hist = sub.assign(reader_id=sub["reader"].map(reader_id), case_id=sub["case"].map(case_id))
    hist = hist[["reader_id", "case_id", "reader", "case", "truth", "score", "first_score",
                 "final_score", "changes", "duration_s", "view_s", "over_time"]]
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(history, hist.sort_values(["reader_id", "case_id"]).to_csv(index=False))
    write_text(target, "\n".join(lines) + "\n")
    return target


@dataclass
class ImportResult:
    file: Path
    n_rows: int
    n_new: int
    n_unchanged: int


def import_ratings(study: Study | Path | str, csv_path: Path | str,
                   db: str | None = None) -> ImportResult:
    """Add ratings collected elsewhere (CSV with columns ``reader``, ``case``, ``score``).

    All rows are validated first (known reader, a case of this study, a score on the
    protocol's scale, no (reader, case) twice) and written in one transaction: a bad file
    changes nothing. Re-importing the same file is a no-op; a conflicting score is an error.
    """
    st = _as_study(study, db)
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        raise StudyError(f"{csv_path}: is a folder; expected a CSV file with columns reader, "
                         "case, score")
    if not csv_path.is_file():
        raise StudyError(f"{csv_path}: file not found")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:
        raise StudyError(f"{csv_path}: not a readable CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("reader", "case", "score") if c not in df.columns]
    if missing:
        raise StudyError(f"{csv_path}: missing column {missing[0]!r}; expected columns reader, "
                         f"case, score (found {', '.join(df.columns) or 'none'})")
    if df.empty:
        raise StudyError(f"{csv_path}: no rows")
    with st.store() as store:
        readers = set(store.readers())
        cases = set(store.case_ids())
    scale = set(st.protocol.values)
    rows: list[tuple[str, str, int]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(df.itertuples(index=False), start=2):
        reader, case, raw = (str(rec.reader).strip(), str(rec.case).strip(),
                             str(rec.score).strip())
        where = f"{csv_path} line {i}"
        if reader not in readers:
            raise StudyError(f"{where}: unknown reader {reader!r}; this study's readers are "
                             f"{', '.join(sorted(readers))}")
        if case.endswith(".png"):
            case = case[:-4]
        if case not in cases:
            raise StudyError(f"{where}: unknown case {case!r}; cases are the file stems in "
                             f"{st.cases_dir}")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not value.is_integer() or int(value) not in scale:
            raise StudyError(f"{where}: score {raw!r} is not on the scale "
                             f"{', '.join(map(str, sorted(scale)))} of protocol "
                             f"{st.protocol.name!r}")
        if (reader, case) in seen:
            raise StudyError(f"{where}: reader {reader!r} rates case {case!r} a second time "
                             f"(first on line {seen[(reader, case)]})")
        seen[(reader, case)] = i
        rows.append((reader, case, int(value)))
    with st.store() as store:
        n_new, n_same = store.import_ratings(rows, source=str(csv_path))
    return ImportResult(file=csv_path, n_rows=len(rows), n_new=n_new, n_unchanged=n_same)


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------


@dataclass
class AnalysisResult:
    results: dict
    table: str
    files: list[Path]


def _reader_stats(truth: np.ndarray, score: np.ndarray, history: pd.DataFrame, cutoff: float,
                  margin: float, level: float) -> dict:
    from mame_eval.stats.proportions import binomial_test_accuracy
    from mame_eval.stats.roc import (
        cutoff_metrics,
        delong_ci,
        equivalence_test_auc,
        roc_curve_empirical,
    )

    auc, se, ci = delong_ci(truth, score, level)
    cm = cutoff_metrics(truth, score, cutoff)
    bt = binomial_test_accuracy(cm.tp + cm.tn, truth.size, level)
    eq = equivalence_test_auc(truth, score, margin, level)
    fpr, tpr, thr = roc_curve_empirical(truth, score)
    dur = pd.to_numeric(history["duration_s"], errors="coerce").to_numpy(dtype=float)
    d = dur[np.isfinite(dur)]
    view = pd.to_numeric(history["view_s"], errors="coerce").to_numpy(dtype=float)
    v = view[np.isfinite(view)]
    return {
        "auroc": auc,
        "ci": [ci[0], ci[1]],
        "se": se,
        "n_cases": int(truth.size),
        "n_real": int(truth.sum()),
        "n_synthetic": int(truth.size - truth.sum()),
        "cutoff": cm.cutoff,
        "accuracy": cm.accuracy,
        "sensitivity": cm.sensitivity,
        "specificity": cm.specificity,
        "confusion": {"tp": cm.tp, "fp": cm.fp, "tn": cm.tn, "fn": cm.fn},
        "binomial_test": {"n_correct": bt.n_correct, "n": bt.n, "accuracy": bt.accuracy,
                          "p_value": bt.p_value, "ci": [bt.ci[0], bt.ci[1]]},
        "equivalence_test": {"margin": eq.margin, "p_value": eq.p_value,
                             "p_lower": eq.p_lower, "p_upper": eq.p_upper,
                             "equivalent": eq.equivalent, "ci": [eq.ci[0], eq.ci[1]],
                             "ci_level": 2 * level - 1},
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(),
                "thresholds": [None if math.isinf(t) else float(t) for t in thr]},
        "time_per_case_s": ({"n": int(d.size), "median": float(np.median(d)),
                             "mean": float(d.mean())} if d.size else None),
        "history": {
            "n_changed": int((history["changes"] > 0).sum()),
            "n_changes": int(history["changes"].sum()),
            "n_first_differs": int((history["first_score"] != history["final_score"]).sum()),
            "n_over_time": int(history["over_time"].sum()),
            "total_view_s": ({"n": int(v.size), "median": float(np.median(v)),
                              "sum": float(v.sum())} if v.size else None),
        },
    }


def _agreement(wide: pd.DataFrame) -> dict | None:
    from mame_eval.stats.agreement import krippendorff_alpha_ordinal, pairwise_kappa

    if wide.shape[1] < 2:
        return None
    out: dict[str, Any] = {"weighting": "quadratic"}
    try:
        kap = pairwise_kappa(wide)
        out["kappa"] = [{"reader_a": r.reader_a, "reader_b": r.reader_b, "kappa": float(r.kappa),
                         "n_cases": int(r.n_cases)} for r in kap.itertuples(index=False)]
        out["kappa_mean"] = float(kap["kappa"].mean())
    except InputError as exc:
        out["kappa"], out["kappa_mean"], out["kappa_note"] = None, None, str(exc)
    try:
        out["krippendorff_alpha"] = krippendorff_alpha_ordinal(wide.to_numpy(dtype=float).T)
    except InputError as exc:
        out["krippendorff_alpha"], out["alpha_note"] = None, str(exc)
    return out


def _format_table(res: dict) -> str:
    lv = int(round(res["level"] * 100))
    lines = [
        f"Reader study {res['study']}: {res['n_cases']} cases ({res['n_real']} real, "
        f"{res['n_synthetic']} synthetic); positive = real, AUROC 0.5 = readers cannot tell",
        f"score analysed: the {res['score_used']} score of each rating (protocol score_used); "
        f"cutoff {res['cutoff']:g} (score > cutoff called real); equivalence margin "
        f"±{res['margin']:g}; {lv}% intervals",
        "",
        f"{'reader':<14}{'AUROC':>7}  {f'{lv}% CI (DeLong)':<17}{'acc':>6}{'sens':>6}"
        f"{'spec':>6}{'binom p':>9}{'TOST p':>8}{'changed':>9}{'over t':>8}{'med s':>7}",
    ]
    for name, r in res["readers"].items():
        h = r["history"]
        med = r["time_per_case_s"]["median"] if r["time_per_case_s"] else float("nan")
        lines.append(
            f"{name:<14}{r['auroc']:>7.3f}  [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]   "
            f"{r['accuracy']:>6.3f}{r['sensitivity']:>6.3f}{r['specificity']:>6.3f}"
            f"{r['binomial_test']['p_value']:>9.3g}{r['equivalence_test']['p_value']:>8.3g}"
            f"{h['n_changed']:>9d}{h['n_over_time']:>8d}{med:>7.1f}")
    a = res["average"]
    df = "inf" if a["df"] is None else f"{a['df']:.1f}"
    lines += ["", f"reader-averaged AUROC {a['auroc']:.3f}, {lv}% CI [{a['ci'][0]:.3f}, "
              f"{a['ci'][1]:.3f}] (SE {a['se']:.4f}, df {df}; {a['method']}; "
              f"{a['n_readers']} readers, {a['n_cases']} cases)"]
    if a.get("ci_note"):
        lines.append("note: " + a["ci_note"])
    ag = res.get("agreement")
    if ag:
        if ag.get("kappa"):
            pairs = ", ".join(f"{k['reader_a']}-{k['reader_b']} {k['kappa']:.3f}"
                              for k in ag["kappa"])
            lines.append(f"agreement: quadratic-weighted kappa {pairs}")
        elif ag.get("kappa_note"):
            lines.append(f"agreement: kappa undefined ({ag['kappa_note']})")
        alpha = ag.get("krippendorff_alpha")
        lines.append("agreement: Krippendorff's alpha (ordinal) "
                     + (f"{alpha:.3f}" if alpha is not None else
                        f"undefined ({ag.get('alpha_note')})"))
    for r, why in res.get("excluded_readers", {}).items():
        lines.append(f"excluded: {r} ({why})")
    if res.get("blinding_audit_warning"):
        lines.append("warning: " + res["blinding_audit_warning"])
    return "\n".join(lines)


def _check_analysis_options(st: Study, cutoff: float, margin: float, level: float,
                            covariance: str, out: Path | str | None) -> Path:
    values = st.protocol.values
    if not math.isfinite(cutoff) or not values[0] <= cutoff < values[-1]:
        raise StudyError(f"--cutoff {cutoff:g}: expected a value in [{values[0]}, {values[-1]}) "
                         f"on the protocol's scale {list(values)}, so that both calls occur")
    if not (math.isfinite(margin) and 0 < margin < 0.5):
        raise StudyError(f"--margin {margin:g}: expected an equivalence margin around AUROC 0.5 "
                         "strictly between 0 and 0.5 (e.g. 0.1)")
    if not (math.isfinite(level) and 0 < level < 1):
        raise StudyError(f"--level {level:g}: expected a confidence level between 0 and 1 "
                         "(e.g. 0.95)")
    if covariance not in ("jackknife", "delong"):
        raise StudyError(f"--covariance {covariance!r}: expected jackknife or delong")
    out_dir = Path(out) if out else st.path / "analysis"
    if out_dir.exists() and not out_dir.is_dir():
        raise StudyError(f"--out {out_dir}: is a file; expected a folder for the analysis "
                         "outputs (results.json, roc.png, ...)")
    return out_dir


def _clip_average(m: dict) -> dict:
    """The reader-averaged interval clipped to [0, 1], with a note when it had to be."""
    lo, hi = (float(v) for v in m["ci"])
    out = {"ci": [min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)], "ci_unclipped": [lo, hi],
           "ci_note": None}
    if lo < 0 or hi > 1:
        out["ci_note"] = (f"the OR-Hillis interval [{lo:.3f}, {hi:.3f}] reaches outside [0, 1] "
                          "(few readers or cases, normal approximation); it is shown clipped "
                          "to [0, 1]")
    return out


def write_analysis(out_dir: Path, results: dict, table: str, curves: dict[str, tuple],
                   provenance: dict) -> list[Path]:
    """Write every output of ``study analyze`` into ``out_dir`` (each file atomically) through
    the run record: ``results.json``, ``readers.csv``, ``roc.png``/``roc.pdf``, ``table.txt``,
    ``provenance.json`` and ``run.json`` (what ``mame-eval report`` reads). Returns the files."""
    from mame_eval.journeys.record import RunRecord
    from mame_eval.reports.roc import plot_roc

    out_dir.mkdir(parents=True, exist_ok=True)
    flat = pd.DataFrame([{
        "reader": r, "auroc": v["auroc"], "ci_lo": v["ci"][0], "ci_hi": v["ci"][1], "se": v["se"],
        "accuracy": v["accuracy"], "sensitivity": v["sensitivity"],
        "specificity": v["specificity"], "binomial_p": v["binomial_test"]["p_value"],
        "equivalence_p": v["equivalence_test"]["p_value"], "n_cases": v["n_cases"],
        "n_changed": v["history"]["n_changed"], "n_over_time": v["history"]["n_over_time"],
        "median_time_s": v["time_per_case_s"]["median"] if v["time_per_case_s"] else None}
        for r, v in results["readers"].items()])
    write_text(out_dir / "table.txt", table + "\n")
    a = results["average"]
    figs = plot_roc(curves, out_dir / "roc", title=f"Real vs synthetic: {results['study']}",
                    average_auc=a["auroc"], average_ci=tuple(a["ci"]),
                    cis={r: tuple(v["ci"]) for r, v in results["readers"].items()},
                    level=results["level"], note=a.get("ci_note"))
    extra = {k: v for k, v in provenance.items()
             if k not in ("command", "versions", "settings", "inputs", "wall_time_s")}
    record = RunRecord(
        kind="study analyze", out=out_dir, settings=provenance["settings"],
        inputs=provenance["inputs"], tables={"readers": flat},
        documents={"results": results}, extra_files=[*figs, out_dir / "table.txt"],
        summary={"study": results["study"], "n_cases": results["n_cases"],
                 "n_readers": len(results["readers"]), "reader_average_auroc": a["auroc"],
                 "reader_average_ci": a["ci"], "score_used": results["score_used"]},
        provenance_extra=extra)
    record.started -= provenance.get("wall_time_s", 0.0)
    record.write()
    return [out_dir / "results.json", out_dir / "readers.csv", *figs, out_dir / "table.txt",
            out_dir / "provenance.json", out_dir / "run.json"]


def analyze_study(study: Study | Path | str, cutoff: float | None = None, margin: float = 0.1,
                  level: float = 0.95, covariance: str = "jackknife",
                  out: Path | str | None = None, db: str | None = None,
                  score: str | None = None) -> AnalysisResult:
    """ROC analysis of a study: per reader and reader-averaged (Obuchowski-Rockette, Hillis).

    "Positive" is *real* (truth 1); higher scores mean "more likely real". Readers who have
    not rated every case are left out (listed under ``excluded_readers``). The score analysed
    is the protocol's ``score_used`` (``final`` unless it says ``first``; ``score`` overrides
    it) and the results say which. Every option is checked before anything is written.

    Writes into ``out`` (default ``<study>/analysis``) with :func:`write_analysis`:
    ``results.json``, ``readers.csv``, ``roc.png``, ``roc.pdf``, ``table.txt``,
    ``provenance.json``.

    ``results.json``::

        {"study", "n_cases", "n_real", "n_synthetic", "positive": "real", "score_used",
         "cutoff", "margin", "level",
         "readers": {"<reader>": {"auroc", "ci": [lo, hi], "se", "accuracy", "sensitivity",
                                  "specificity", "confusion", "binomial_test",
                                  "equivalence_test", "roc", "time_per_case_s",
                                  "history": {"n_changed", "n_changes", "n_first_differs",
                                              "n_over_time", "total_view_s"}, ...}},
         "average": {"auroc", "ci": [lo, hi] (clipped to [0, 1]), "ci_unclipped", "ci_note",
                     "se", "df", "n_readers", "method", ...},
         "agreement": {"kappa": [...], "kappa_mean", "krippendorff_alpha"} | null,
         "mrmc": <mame_eval.studies.ratings.result_to_dict>, "excluded_readers": {...},
         "blinding_audit_warning": str | null}
    """
    from mame_eval.provenance import versions
    from mame_eval.stats.mrmc import or_mrmc
    from mame_eval.studies.ratings import load_ratings, reader_roc_curves, result_to_dict

    t0 = time.perf_counter()
    st = _as_study(study, db)
    cutoff = st.protocol.effective_cutoff if cutoff is None else float(cutoff)
    choice = _score_choice(st, score)
    out_dir = _check_analysis_options(st, cutoff, margin, level, covariance, out)
    key = read_key(st)
    df = long_ratings(st, score=choice)
    n = len(key)
    counts = df.groupby("reader")["case"].nunique() if not df.empty else pd.Series(dtype=int)
    with st.store() as store:
        all_readers = store.readers()
    complete = [r for r in all_readers if counts.get(r, 0) == n]
    excluded = {r: f"rated {int(counts.get(r, 0))} of {n} cases"
                for r in all_readers if r not in complete}
    if not complete:
        detail = ", ".join(f"{r} {int(counts.get(r, 0))}/{n}" for r in all_readers)
        raise StudyError(f"{st.path}: no reader has rated all {n} cases yet ({detail}); "
                         "analyze needs at least one complete reader")
    df = df[df["reader"].isin(complete)].reset_index(drop=True)

    cases = sorted(key["case"])
    truth = key.set_index("case").loc[cases, "truth"].to_numpy().astype(int)
    readers_out: dict[str, dict] = {}
    wide = {}
    for r in complete:
        dr = df[df["reader"] == r].set_index("case").loc[cases]
        sc = dr["score"].to_numpy(dtype=float)
        readers_out[r] = _reader_stats(truth, sc, dr, cutoff, margin, level)
        wide[r] = sc

    data = load_ratings(df[["reader", "case", "truth", "score"]], modality=None)
    orr = or_mrmc(data.ratings, data.truth, covariance=covariance, level=level,
                  modalities=data.modalities, readers=data.readers)
    mrmc = result_to_dict(orr)
    m = mrmc["modalities"][data.modalities[0]]
    one = len(complete) == 1
    average = {
        "auroc": m["auc"], **_clip_average(m), "se": m["se"], "df": m["df"],
        "n_readers": len(complete), "n_cases": n, "level": level, "covariance": covariance,
        "method": ("one reader: fixed reader, random cases" if one else
                   "Obuchowski-Rockette, random readers and cases, Hillis df"),
    }
    audit = read_audit(st.path)
    results = {
        "study": st.name, "protocol": st.protocol.name, "n_cases": n,
        "n_real": int(truth.sum()), "n_synthetic": int(n - truth.sum()),
        "positive": "real", "score_used": choice, "cutoff": cutoff, "margin": margin,
        "level": level, "readers": readers_out, "average": average,
        "agreement": _agreement(pd.DataFrame(wide, index=cases)),
        "mrmc": mrmc, "excluded_readers": excluded,
        "blinding_audit_warning": audit_warning(audit) if audit is not None else None,
    }
    table = _format_table(results)
    curves = reader_roc_curves(data, data.modalities[0])
    provenance = {
        "command": "study analyze", "versions": versions(),
        "settings": {"cutoff": cutoff, "margin": margin, "level": level,
                     "covariance": covariance, "score_used": choice},
        "inputs": {"key.csv": file_sha256(st.key_path),
                   "ratings_sha256": hashlib.sha256(
                       df[["reader", "case", "score"]].to_csv(index=False).encode()).hexdigest(),
                   "database": redact_url(st.db_url)},
        "created_at": utcnow(), "wall_time_s": time.perf_counter() - t0,
    }
    files = write_analysis(out_dir, results, table, {r: curves[r] for r in complete},
                           provenance)
    return AnalysisResult(results=results, table=table, files=files)
