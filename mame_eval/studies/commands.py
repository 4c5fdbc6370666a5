"""``mame-eval study …``: the reader-study commands, a Typer sub-app (thin: parse, call, print).

Mounted on the main CLI with ``app.add_typer(study_app, name="study")``; also runnable on its
own as ``python -m mame_eval.studies.commands …``. Library errors
(:class:`~mame_eval.errors.MameError`) become one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import typer

from mame_eval.errors import MameError

study_app = typer.Typer(
    name="study",
    help="Blinded real-vs-synthetic reader studies: create, serve (Streamlit), status, "
    "export, import-ratings, analyze, token, upgrade.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_DB_HELP = ("SQLAlchemy URL of the study database when it is not STUDY/study.db "
            "(e.g. postgresql://user:pass@host/db); also $MAME_EVAL_STUDY_DB.")


@study_app.command()
def create(
    real: Path = typer.Option(..., "--real", help="Folder of real images (truth 1)."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Folder of synthetic images "
                                   "(truth 0)."),
    n: int = typer.Option(53, "--n", help="Number of cases."),
    readers: str = typer.Option(..., "--readers", help="Comma-separated reader names, e.g. "
                                "alice,bob,carol."),
    out: Path = typer.Option(..., "--out", help="New study folder, e.g. studies/turing-1."),
    ratio: float = typer.Option(0.5, "--ratio", help="Fraction of real cases."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of sampling, names and orders "
                                    "(random and recorded when omitted)."),
    protocol: Path | None = typer.Option(None, "--protocol", help="Protocol TOML (default: "
                                         "the paper's 0-4 scale, studies/turing-0-4.toml)."),
    size: str | None = typer.Option(None, "--size", help="Common case size HxW or N "
                                    "(default: the smallest input size)."),
    address: str = typer.Option("localhost", "--address", help="Address `serve` listens on."),
    port: int = typer.Option(8501, "--port", help="Port `serve` listens on."),
    base_url: str | None = typer.Option(None, "--base-url", help="Public URL of the app for "
                                        "the links (behind a proxy)."),
    db: str | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Sample, blind and register a study; print each reader's private link ONCE."""
    from mame_eval.progress import progress_bar
    from mame_eval.studies.study import create_study

    progress, bar = progress_bar("blinding cases", unit="case")
    with bar:
        res = create_study(out, real, synthetic, n, readers, ratio=ratio, seed=seed,
                           protocol=protocol, size=size, db=db, address=address, port=port,
                           base_url=base_url, progress=progress)
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"created study {res.path}: {res.n_real} real + {res.n_synthetic} synthetic "
               f"cases, {res.height}x{res.width} px, seed {res.seed}")
    typer.echo("Private links (shown only now; only their hashes are stored):")
    for reader, link in res.reader_links.items():
        typer.echo(f"  reader {reader}: {link}")
    typer.echo(f"  coordinator: {res.coordinator_link}")
    if res.audit_warning:
        bar = "!" * 78
        typer.echo(f"{bar}\nwarning: {res.audit_warning}\n{bar}", err=True)
    else:
        typer.echo(f"blinding audit: no pixel statistic separates real from synthetic cases "
                   f"({res.audit_files[0].name})")
    typer.echo(f"Next: mame-eval study serve {res.path}")


@study_app.command()
def serve(
    study: Path = typer.Argument(..., help="Study folder."),
    port: int | None = typer.Option(None, "--port", help="Port (default: from study.toml)."),
    address: str | None = typer.Option(None, "--address", help="Address to listen on, e.g. "
                                       "0.0.0.0 for every interface (default: study.toml)."),
    db: str | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Serve the study in Streamlit until interrupted (Ctrl-C)."""
    from mame_eval.studies.study import link_port_warning, open_study
    from mame_eval.studies.study import serve as serve_study

    st = open_study(study, db)
    warning = link_port_warning(st, port)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    proc = serve_study(st, port=port, address=address, db=db, wait=True)
    where = port or st.settings.get("port")
    typer.echo(f"serving study {st.name} on {address or st.settings.get('address')}:{where} "
               "(readers use their private links); Ctrl-C stops")
    def _stop(signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)  # stop the server with this command
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code:
        raise MameError(f"the study server stopped with exit status {code}")


@study_app.command()
def status(
    study: Path = typer.Argument(..., help="Study folder."),
    db: str | None = typer.Option(None, "--db", help=_DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Each reader's progress (no ratings, no truth)."""
    from mame_eval.studies.study import format_status, study_status

    res = study_status(study, db)
    typer.echo(json.dumps(res.to_dict(), indent=2) if json_out else format_status(res))


@study_app.command()
def export(
    study: Path = typer.Argument(..., help="Study folder."),
    fmt: str = typer.Option("long", "--format", help="long (CSV for `mame-eval mrmc`) or "
                            "imrmc (iMRMC input)."),
    out: Path | None = typer.Option(None, "--out", help="Output file (default: "
                                    "STUDY/exports/…)."),
    db: str | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Export the ratings with the truth (1 = real)."""
    from mame_eval.studies.study import export_ratings

    typer.echo(f"wrote {export_ratings(study, fmt, out, db)}")


@study_app.command("import-ratings")
def import_ratings(
    study: Path = typer.Argument(..., help="Study folder."),
    csv: Path = typer.Argument(..., help="CSV with columns reader, case, score."),
    db: str | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Add ratings collected elsewhere (all or nothing)."""
    from mame_eval.studies.study import import_ratings as do_import

    res = do_import(study, csv, db)
    typer.echo(f"imported {res.n_new} ratings from {res.file} ({res.n_unchanged} already "
               "stored, unchanged)")


@study_app.command()
def analyze(
    study: Path = typer.Argument(..., help="Study folder."),
    cutoff: float | None = typer.Option(None, "--cutoff", help="Scores above it are called "
                                        "real (default: the protocol's, 2.5 on 0-4)."),
    margin: float = typer.Option(0.1, "--margin", help="Equivalence margin around AUROC 0.5."),
    level: float = typer.Option(0.95, "--level", help="Confidence level."),
    covariance: str = typer.Option("jackknife", "--covariance", help="MRMC AUC covariance: "
                                   "jackknife or delong."),
    score: str | None = typer.Option(None, "--score", help="Analyse the first or the final "
                                     "score of each rating (default: the protocol's "
                                     "score_used)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: "
                                    "STUDY/analysis)."),
    db: str | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Per-reader ROC/AUROC (DeLong CI), tests, reader-averaged OR-Hillis AUROC, agreement."""
    from mame_eval.studies.study import analyze_study

    res = analyze_study(study, cutoff=cutoff, margin=margin, level=level,
                        covariance=covariance, out=out, db=db, score=score)
    typer.echo(res.table)
    typer.echo("wrote " + ", ".join(str(p) for p in res.files))


@study_app.command()
def token(
    study: Path = typer.Argument(..., help="Study folder."),
    reader: str | None = typer.Option(None, "--reader", help="Reader to give a new link "
                                      "(default: the coordinator)."),
    db: str | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Issue a new private link (the old one stops working)."""
    from mame_eval.studies.study import reissue_token

    link = reissue_token(study, reader, db)
    typer.echo(f"new link for {'reader ' + reader if reader else 'the coordinator'}: {link}")


@study_app.command()
def upgrade(
    study: Path = typer.Argument(..., help="Study folder."),
    db: str | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Migrate a study made by an older mame-eval to this version's database schema."""
    from mame_eval.studies.study import upgrade_study

    old, new = upgrade_study(study, db)
    typer.echo(f"study {study}: schema version {old} -> {new}" if old != new else
               f"study {study}: schema version {new}, nothing to upgrade")


def main() -> None:
    """``python -m mame_eval.studies.commands``: errors become one line and exit status 1."""
    try:
        study_app()
    except MameError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
