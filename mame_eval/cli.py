"""The ``mame-eval`` command line: parse, call one library function, print. No logic here.

Every library error (:class:`mame_eval.errors.MameError`) becomes one line on stderr and exit
status 1; usage errors exit with 2 (click's convention).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mame_eval.errors import MameError

app = typer.Typer(
    name="mame-eval",
    help="Fine-tune, sample and assess MAM-E mammogram diffusion models — offline on a CPU "
    "with the embedded phantoms and tiny models, or with the published weights on a GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _progress_bar(desc: str, unit: str = "img"):
    """A tqdm bar driven by ``progress(done, total)`` callbacks; returns (callback, bar)."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected HEIGHTxWIDTH, e.g. 1024x832") from None
    return height, width


@app.command()
def phantoms(
    out: Path = typer.Argument(..., help="Output folder (VinDr-Mammo layout)."),
    n: int = typer.Option(200, "--n", help="Number of images (studies of 4 views)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same bytes."),
    population: str = typer.Option(
        "mixed", help="hologic (area labels only), siemens (density labels only) or mixed."),
    lesion_fraction: float = typer.Option(0.3, help="Fraction of images with a mass, 0…1."),
    size: str = typer.Option("1024x832", help="Image size HEIGHTxWIDTH (portrait like FFDM)."),
    preview: bool = typer.Option(False, help="Also write OUT/preview.png, a 4×4 contact sheet."),
) -> None:
    """Write procedural phantom mammograms as a VinDr-Mammo-format dataset with ground truth."""
    from mame_eval.data.phantoms import write_phantom_dataset

    update, bar = _progress_bar("phantoms")
    with bar:
        summary = write_phantom_dataset(
            out, n=n, seed=seed, population=population, lesion_fraction=lesion_fraction,
            size=_parse_size(size), preview=preview,
            progress=lambda done: update(done, n))
    typer.echo(f"wrote {n} phantom images to {out}")
    typer.echo(str(summary))


@app.command()
def prepare(
    raw: Path = typer.Argument(..., help="Raw dataset root (images/, breast-level_annotations."
                               "csv, finding_annotations.csv)."),
    out: Path = typer.Argument(..., help="Output folder for the prepared imagefolder."),
    size: int = typer.Option(512, help="Output side length in pixels."),
    crop: str = typer.Option("center", help="center (the paper) or pad (letterbox, keeps the "
                             "whole breast)."),
    family: str = typer.Option("auto", help="Prompt grammar: hologic, siemens, fusion, or auto "
                               "(from the vendors found)."),
    to8bit: str = typer.Option("paper", help="paper (min-max) or window (DICOM VOI window)."),
    findings: str = typer.Option("Mass", help="Comma-separated finding categories that become "
                                 "inpainting samples."),
    workers: int = typer.Option(1, help="Worker processes."),
) -> None:
    """Prepare mammograms exactly as the paper did: 8-bit, mirrored, 512 px, prompts, masks."""
    from mame_eval.data.prepare import PrepareSettings, prepare_dataset

    settings = PrepareSettings(
        size=size, crop=crop, family=family, to8bit=to8bit,
        findings=tuple(f.strip() for f in findings.split(",") if f.strip()))
    update, bar = _progress_bar("prepare")
    with bar:
        report = prepare_dataset(raw, out, settings, workers=workers, progress=update)
    for item in report.skipped[:20]:
        typer.echo(f"skipped {item['file'] or item['image_id']}: {item['reason']}", err=True)
    if len(report.skipped) > 20:
        typer.echo(f"… and {len(report.skipped) - 20} more (see {out}/prepare_report.json)",
                   err=True)
    for item in report.boxes_skipped[:20]:
        typer.echo(f"box skipped in {item['image_id']}: {item['reason']}", err=True)
    c = report.counts
    typer.echo(
        f"prepared {c['healthy']} healthy and {c['lesion_samples']} lesion samples "
        f"({report.family} prompts) into {out}; excluded {c['excluded']}, skipped "
        f"{c['skipped']}, boxes skipped {c['boxes_skipped']} — details in prepare_report.json")
    if report.n_prepared == 0:
        raise MameError(f"nothing could be prepared from {raw} (see {out}/prepare_report.json)")


@app.command()
def mrmc(
    ratings: Path = typer.Argument(..., help="Long-format CSV: one row per reader × modality "
                                   "× case."),
    reader: str = typer.Option("reader", help="Reader column."),
    modality: str = typer.Option("modality", help="Modality column (absent = one modality)."),
    case: str = typer.Option("case", help="Case column."),
    truth: str = typer.Option("truth", help="Truth column (1 = positive, 0 = negative)."),
    score: str = typer.Option("score", help="Rating/score column (higher = more positive)."),
    covariance: str = typer.Option("jackknife", help="AUC covariance: jackknife or delong."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Obuchowski–Rockette multi-reader multi-case ROC analysis (Hillis df), like RJafroc."""
    import json

    import pandas as pd

    from mame_eval.errors import InputError
    from mame_eval.studies.ratings import format_mrmc_table, mrmc_report

    if not ratings.is_file():
        raise InputError(f"{ratings}: file not found")
    try:
        frame = pd.read_csv(ratings)
    except Exception as exc:
        raise InputError(f"{ratings}: not a readable CSV ({exc})") from None
    try:
        result = mrmc_report(frame, reader=reader, modality=modality, case=case, truth=truth,
                             score=score, covariance=covariance)
    except InputError as exc:
        raise InputError(f"{ratings}: {exc}") from None
    typer.echo(json.dumps(result, indent=2) if json_out else format_mrmc_table(result))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder of the demo run."),
    n: int = typer.Option(48, "--n", help="Number of phantom images."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Run the offline journey end to end on phantoms and print where everything is."""
    from mame_eval.demo import run_demo

    update, bar = _progress_bar("demo", unit="step")
    with bar:
        summary = run_demo(out, n=n, seed=seed, progress=update)
    typer.echo(summary.render())


def main() -> None:
    """Console entry point: library errors become one line and a non-zero exit."""
    try:
        app()
    except MameError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted — rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
