"""The ``mame-eval`` command line: parse, call one library function, print. No logic here.

Every library error (:class:`mame_eval.errors.MameError`) becomes one line on stderr and exit
status 1; usage errors exit with 2 (click's convention).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer

from mame_eval.errors import MameError
from mame_eval.progress import progress_bar as _progress_bar

app = typer.Typer(
    name="mame-eval",
    help="Fine-tune, sample and assess MAM-E mammogram diffusion models — offline on a CPU "
    "with the embedded phantoms and tiny models, or with the published weights on a GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: paragraphs rewrapped to the terminal; rich keeps the docstrings'
    # line breaks and wraps them again, which breaks every long line in two.
    rich_markup_mode=None,
)


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
    overwrite: bool = typer.Option(False, help="Replace a previous phantom set in OUT."),
) -> None:
    """Write procedural phantom mammograms as a VinDr-Mammo-format dataset with ground truth."""
    from mame_eval.data.phantoms import write_phantom_dataset

    update, bar = _progress_bar("phantoms")
    with bar:
        summary = write_phantom_dataset(
            out, n=n, seed=seed, population=population, lesion_fraction=lesion_fraction,
            size=_parse_size(size), preview=preview, overwrite=overwrite,
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
    from mame_eval.studies.ratings import format_mrmc_table, mrmc_analysis

    if not ratings.is_file():
        raise InputError(f"{ratings}: file not found")
    try:
        frame = pd.read_csv(ratings)
    except Exception as exc:
        raise InputError(f"{ratings}: not a readable CSV ({exc})") from None
    try:
        result, notes = mrmc_analysis(frame, reader=reader, modality=modality, case=case,
                                      truth=truth, score=score, covariance=covariance)
    except InputError as exc:
        raise InputError(f"{ratings}: {exc}") from None
    for note in notes:  # stderr: --json keeps exactly its documented shape
        typer.echo(f"note: {note}", err=True)
    typer.echo(json.dumps(result, indent=2) if json_out else format_mrmc_table(result))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder of the demo run."),
    n: int = typer.Option(200, "--n", help="Number of phantom images."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Run the offline journey end to end on phantoms and print where everything is."""
    from mame_eval.demo import run_demo

    update, bar = _progress_bar("demo", unit="step")
    with bar:
        summary = run_demo(out, n=n, seed=seed, progress=update)
    typer.echo(summary.render())


# --------------------------------------------------------------------------- models, training,
# sampling (issue 3)

models_app = typer.Typer(help="List, build and inspect MAM-E models. Without a subcommand: "
                         "the list.", invoke_without_command=True,
                         rich_markup_mode=None)
train_app = typer.Typer(
    help="Fine-tune MAM-E (DreamBooth-style: UNet + text encoder, VAE frozen) on a prepared "
    "dataset. Runs unchanged under `accelerate launch` for several GPUs.",
    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")

_MODEL_HELP = ("Hub id (e.g. Likalto4/fusion_healthy) or local save_pretrained folder; default: "
               "the embedded MAM-E-tiny.")


@models_app.callback()
def models_main(ctx: typer.Context) -> None:
    """The embedded models and the published MAM-E ids (`mame-eval models` = `models list`)."""
    if ctx.invoked_subcommand is None:
        models_list()


@models_app.command("list")
def models_list() -> None:
    """List the embedded models (shipped, offline) and the published MAM-E hub ids."""
    from mame_eval.models import catalog

    rows = catalog()
    width = max(len(r.name) for r in rows)
    for kind in ("embedded", "published"):
        typer.echo(f"{kind}:")
        for r in (r for r in rows if r.kind == kind):
            state = "ok" if r.available else ("missing" if kind == "embedded" else "not cached")
            typer.echo(f"  {r.name.ljust(width)}  {r.task:<7}  {state:<10}  {r.description}")
            typer.echo(f"  {'':{width}}  {'':7}  {'':10}  {r.location}")


@models_app.command("create-tiny")
def models_create_tiny(
    out: Path = typer.Argument(..., help="Output folder (save_pretrained layout, safetensors)."),
    task: str = typer.Option("txt2img", help="txt2img (4-channel UNet) or inpaint (9-channel)."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
    resolution: int = typer.Option(64, help="Native image size in pixels."),
) -> None:
    """Write a tiny random SD-family pipeline (same classes as SD v1.5, offline tokenizer)."""
    from mame_eval.models import TinySpec, save_tiny_pipeline

    folder = save_tiny_pipeline(out, task=task, seed=seed, spec=TinySpec(resolution=resolution))
    typer.echo(f"wrote a tiny random {task} pipeline ({resolution} px, seed {seed}) to {folder}")


def _train(task: str, config: Path, overrides: list[str]) -> None:
    from mame_eval.training import load_config, train

    settings = load_config(config, overrides, task=task)
    update, bar = _progress_bar(f"train {task}", unit="step")
    with bar:
        result = train(settings, task, progress=update)
    if not result.is_main_process:
        return
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    resumed = f", resumed from {result.resumed_from}" if result.resumed_from else ""
    typer.echo(f"trained {task} to step {result.global_step}{resumed}; last loss {loss}; "
               f"pipeline saved in {result.output_dir} (log: {result.log_csv})")


_SET_HELP = "Override a config key, e.g. --set max_train_steps=3 (repeatable)."


@train_app.command("healthy")
def train_healthy(
    config: Path = typer.Argument(..., help="Training config (TOML), e.g. training/fusion.toml."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
) -> None:
    """Text-to-image fine-tuning on DATA/healthy (images + prompts).

    Writes to output_dir: checkpoint-N/ every checkpointing_steps, logs/train_log.csv and
    TensorBoard events (loss, lr, peak memory), validation/step-N.png grids, and finally the
    pipeline (save_pretrained) that --model accepts. With resume_from_checkpoint = "latest"
    a rerun continues from the newest checkpoint.
    """
    _train("healthy", config, set_)


@train_app.command("inpaint")
def train_inpaint(
    config: Path = typer.Argument(..., help="Training config (TOML), e.g. "
                                  "training/inpaint-siemens.toml."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
) -> None:
    """Lesion-inpainting fine-tuning on DATA/lesion (images, box masks); 9-channel UNet.

    A 4-channel starting model gets its conv_in widened to 9 channels with zero weights.
    Outputs and resuming as for `train healthy`.
    """
    _train("inpaint", config, set_)


@train_app.command("vae")
def train_vae(
    config: Path = typer.Argument(..., help="Autoencoder config (TOML), e.g. "
                                  "training/tiny-vae.toml."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
) -> None:
    """Pre-train a small AutoencoderKL on DATA/healthy and DATA/lesion/images.

    The first stage of a model built from scratch (SD's own VAE was trained apart from its
    UNet): its folder becomes `vae = ...` of a `train healthy` config. Writes the
    save_pretrained AutoencoderKL (scaling_factor = 1/std of the latents), logs/vae_log.csv,
    reconstruction.png and checkpoint-N/ (a rerun resumes from the newest).
    """
    from mame_eval.training.vae import load_vae_config
    from mame_eval.training.vae import train_vae as run

    settings = load_vae_config(config, set_)
    update, bar = _progress_bar("train vae", unit="step")
    with bar:
        result = run(settings, progress=update)
    resumed = f", resumed from {result.resumed_from}" if result.resumed_from else ""
    typer.echo(f"trained the autoencoder to step {result.global_step}{resumed}; reconstruction "
               f"error {result.reconstruction_l1:.2f} gray levels; "
               f"scaling_factor {result.scaling_factor:.4f}; saved in {result.output_dir}")


def _prompt(prompt: str | None, attributes: str | None, laterality: str | None
            ) -> tuple[str, str]:
    from mame_eval.errors import InputError
    from mame_eval.generation import prompt_from_attributes

    if (prompt is None) == (attributes is None):
        raise InputError("give exactly one of --prompt TEXT or --attributes key=value,...")
    side = None
    if attributes is not None:
        prompt, side = prompt_from_attributes(attributes)
    if laterality and side and laterality.upper() != side:
        raise InputError(f"--laterality {laterality} contradicts laterality={side} in "
                         "--attributes")
    return prompt, (laterality or side or "L")


def _report(run, what: str) -> None:
    if not run.is_main_process:
        return
    typer.echo(f"{what}: {run.generated} new, {run.skipped} already there; "
               f"{len(run.rows)} images in {run.out} (manifest: {run.manifest})")


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="Run folder: PNGs + manifest.jsonl."),
    model: str = typer.Option(None, help=_MODEL_HELP),
    prompt: str = typer.Option(None, help="Prompt text, e.g. 'a siemens mammogram in MLO view "
                               "with high density'."),
    attributes: str = typer.Option(None, help="Prompt from attributes, e.g. vendor=siemens,"
                                   "view=MLO,density=high,area=small (grammar from DESIGN §1)."),
    n: int = typer.Option(4, "--n", help="Number of images; image i uses seed SEED+i."),
    guidance: float = typer.Option(4.0, help="Classifier-free guidance scale (paper: 4)."),
    steps: int = typer.Option(24, help="Sampling steps (paper: 24; 50 at high guidance)."),
    seed: int = typer.Option(0, help="Base seed."),
    negative_prompt: str = typer.Option("", help="Negative prompt, e.g. 'white background'."),
    laterality: str = typer.Option(None, help="L (as trained) or R (mirrored)."),
    batch_size: int = typer.Option(4, help="Images per forward pass."),
    scheduler: str = typer.Option("dpm++", help="dpm++ (paper), dpm++-karras, ddim, euler, "
                                  "euler-a, pndm, unipc, …"),
    height: int = typer.Option(None, help="Image height (default: the model's)."),
    width: int = typer.Option(None, help="Image width (default: the model's)."),
    device: str = typer.Option(None, help="cuda, cpu, … (default: CUDA when available)."),
    dtype: str = typer.Option(None, help="fp16, bf16 or fp32 (default: fp16 on CUDA)."),
) -> None:
    """Generate mammograms from a prompt into a resumable run folder.

    Image i uses seed SEED+i; a rerun skips images already in the manifest. Under
    `accelerate launch --multi_gpu --num_processes K -m mame_eval generate ...` the images
    are split across the K processes and one manifest is written (on a machine without GPUs
    the K processes run on the CPU over gloo; without --multi_gpu accelerate starts only one).
    """
    from mame_eval.generation import generate as run_generate

    text, side = _prompt(prompt, attributes, laterality)
    update, bar = _progress_bar("generate")
    with bar:
        run = run_generate(model, text, out, n=n, guidance_scale=guidance, steps=steps,
                           seed=seed, negative_prompt=negative_prompt, laterality=side,
                           batch_size=batch_size, scheduler=scheduler, height=height,
                           width=width, device=device, dtype=dtype, progress=update)
    _report(run, f"generated {text!r}")


@app.command()
def inpaint(
    image: Path = typer.Option(..., help="Image to add a lesion to (sides multiples of 8)."),
    out: Path = typer.Option(..., "--out", help="Run folder: PNGs, mask.png, manifest.jsonl."),
    model: str = typer.Option(None, help="Inpainting model: hub id (e.g. Likalto4/"
                              "vindr_lesion-inpainting) or local folder; default: embedded."),
    mask: Path = typer.Option(None, help="Mask image, white = where the lesion goes."),
    box: str = typer.Option(None, help="Lesion box x0,y0,x1,y1 in image pixels."),
    prompt: str = typer.Option("a mammogram with a lesion", help="Prompt (as trained)."),
    n: int = typer.Option(1, "--n", help="Number of variants; variant i uses seed SEED+i."),
    guidance: float = typer.Option(4.0, help="Classifier-free guidance scale."),
    steps: int = typer.Option(24, help="Sampling steps."),
    seed: int = typer.Option(0, help="Base seed."),
    negative_prompt: str = typer.Option("", help="Negative prompt."),
    composite: bool = typer.Option(True, help="Keep the original pixels outside the "
                                   "(feathered) mask; --no-composite: raw pipeline output."),
    feather: float = typer.Option(None, help="Feather width in pixels (default ~1 % of the "
                                  "image side)."),
    batch_size: int = typer.Option(4, help="Images per forward pass."),
    scheduler: str = typer.Option("dpm++", help="Scheduler name."),
    device: str = typer.Option(None, help="cuda, cpu, …"),
    dtype: str = typer.Option(None, help="fp16, bf16 or fp32."),
) -> None:
    """Inpaint a lesion into a mammogram inside a mask or box (paper §2.4)."""
    from mame_eval.generation import inpaint as run_inpaint
    from mame_eval.generation import parse_box

    update, bar = _progress_bar("inpaint")
    with bar:
        run = run_inpaint(model, image, out, mask=mask,
                          box=parse_box(box) if box is not None else None, prompt=prompt, n=n,
                          guidance_scale=guidance, steps=steps, seed=seed,
                          negative_prompt=negative_prompt, composite_output=composite,
                          feather=feather, batch_size=batch_size, scheduler=scheduler,
                          device=device, dtype=dtype, progress=update)
    _report(run, f"inpainted {image}")


@app.command()
def synthesize(
    out: Path = typer.Option(..., "--out", help="Run folder: healthy/, images/, masks/, "
                             "manifest.jsonl."),
    model: str = typer.Option(None, help=_MODEL_HELP),
    inpaint_model: str = typer.Option(None, help="Inpainting model (default: embedded)."),
    prompt: str = typer.Option(None, help="Prompt of the healthy image."),
    attributes: str = typer.Option(None, help="Prompt from attributes (see generate)."),
    box: str = typer.Option(None, help="Lesion box x0,y0,x1,y1 (default: a random box inside "
                            "the breast per image)."),
    n: int = typer.Option(4, "--n", help="Number of images; image i uses seed SEED+i."),
    guidance: float = typer.Option(4.0, help="Guidance of the healthy image."),
    inpaint_guidance: float = typer.Option(None, help="Guidance of the lesion (default: same)."),
    steps: int = typer.Option(24, help="Sampling steps (both stages)."),
    seed: int = typer.Option(0, help="Base seed."),
    negative_prompt: str = typer.Option("", help="Negative prompt (both stages)."),
    laterality: str = typer.Option(None, help="L or R (mirrored)."),
    composite: bool = typer.Option(True, help="Keep healthy pixels outside the lesion box."),
    batch_size: int = typer.Option(4, help="Images per forward pass."),
    scheduler: str = typer.Option("dpm++", help="Scheduler name."),
    device: str = typer.Option(None, help="cuda, cpu, …"),
    dtype: str = typer.Option(None, help="fp16, bf16 or fp32."),
) -> None:
    """A fully synthetic mammogram with a lesion: generate healthy, then inpaint (Fig. 8)."""
    from mame_eval.generation import parse_box
    from mame_eval.generation import synthesize as run_synthesize

    text, side = _prompt(prompt, attributes, laterality)
    update, bar = _progress_bar("synthesize")
    with bar:
        run = run_synthesize(model, inpaint_model, text, out, n=n,
                             box=parse_box(box) if box is not None else None,
                             guidance_scale=guidance, inpaint_guidance_scale=inpaint_guidance,
                             steps=steps, seed=seed, negative_prompt=negative_prompt,
                             laterality=side, composite_output=composite,
                             batch_size=batch_size, scheduler=scheduler, device=device,
                             dtype=dtype, progress=update)
    _report(run, f"synthesized {text!r} with lesions")


@app.command()
def playground(
    model: str = typer.Option(None, help=_MODEL_HELP),
    inpaint_model: str = typer.Option(None, help="Inpainting model (default: embedded)."),
    family: str = typer.Option(None, help="Prompt family of --model: hologic, siemens or "
                               "fusion (default: known for the published ids, else fusion)."),
    workspace: Path = typer.Option(Path("runs/playground"), help="Where saved selections "
                                   "(run folders) and scratch runs go."),
    data: Path = typer.Option(None, help="A prepared dataset whose healthy images the Inpaint "
                              "tab offers."),
    address: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 shares the "
                                "app with the network."),
    port: int = typer.Option(8502, help="Port to listen on."),
) -> None:
    """Interactive generation playground (Streamlit): prompts, lesion brush, healthy + lesion."""
    from mame_eval.playground import serve, url

    proc = serve(model, inpaint_model, family=family, workspace=workspace, data=data,
                 address=address, port=port)
    typer.echo(f"playground at {url(address, port)} — Ctrl-C to stop")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()


# --------------------------------------------------------------------------- assessment


@app.command()
def diversity(
    model: str | None = typer.Option(None, help=_MODEL_HELP),
    images: Path | None = typer.Option(None, help="Measure a folder of images instead of a "
                                       "model (one row, empty guidance)."),
    prompt: str | None = typer.Option(None, help="Prompt (default: a hologic MLO medium-area "
                                      "prompt)."),
    guidance: str = typer.Option("4:14", help="Guidance scales: START:STOP[:STEP] or a comma "
                                 "list."),
    n: int = typer.Option(20, "--n", help="Images per scale (paper protocol: pairs)."),
    steps: int = typer.Option(24, help="Sampling steps (DPM-Solver++)."),
    protocol: str = typer.Option("all-pairs", help="all-pairs (all N(N-1)/2 pairs) or paper "
                                 "(N independent 2-image calls, as the original notebook)."),
    seed: int = typer.Option(0, help="Seed of image 0; image i uses seed+i."),
    negative_prompt: str = typer.Option("", help="Negative prompt."),
    batch_size: int = typer.Option(4, help="Images per pipeline call."),
    out: Path = typer.Option(..., help="Output folder (table, figure, provenance, images)."),
) -> None:
    """MS-SSIM diversity per guidance scale (paper Table 3) with bootstrap CIs."""
    from mame_eval.metrics.assess import diversity_run, parse_guidance

    if model is not None and images is not None:
        raise typer.BadParameter("give --model or --images, not both")
    update, bar = _progress_bar("diversity", unit="scale")
    with bar:
        report = diversity_run(out, model=model, images=images, prompt=prompt,
                               guidance=None if images else parse_guidance(guidance), n=n,
                               steps=steps, protocol=protocol, seed=seed,
                               negative_prompt=negative_prompt, batch_size=batch_size,
                               progress=update)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(report.table.to_string(
        index=False, na_rep="", float_format=lambda v: f"{v:.4f}",
        formatters={"guidance": lambda g: f"{g:g}"}))
    typer.echo(f"written: {', '.join(str(f) for f in report.files)}")


@app.command()
def fid(
    real: Path = typer.Option(..., help="Folder of real images."),
    synthetic: Path = typer.Option(..., help="Folder of synthetic images."),
    features: str = typer.Option("mammonet", help="inception, mammonet, a MammoNet folder or a "
                                 "TorchScript file (.pt: float32 N×3×H×W in [0,1] → N×d)."),
    inception_weights: Path | None = typer.Option(None, help="Local InceptionV3 FID weights "
                                                  "(nothing is downloaded)."),
    cache_dir: Path | None = typer.Option(None, help="Feature cache folder (default: none)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """FID and KID (with a bootstrap CI of FID) between two folders of images."""
    import json

    from mame_eval.metrics.assess import fid_run

    result = fid_run(real, synthetic, features=features, inception_weights=inception_weights,
                     cache_dir=cache_dir)
    for warning in result.pop("warnings"):
        typer.echo(f"warning: {warning}", err=True)
    if json_out:
        result.pop("resize")
        typer.echo(json.dumps(result, indent=2))
    else:
        lo, hi = result["fid_ci"]
        typer.echo(f"FID {result['fid']:.4f} (95 % CI {lo:.4f}–{hi:.4f}), KID "
                   f"{result['kid']:.5f} ± {result['kid_std']:.5f}; n real {result['n_real']}, "
                   f"n synthetic {result['n_synthetic']}; features {result['features']} "
                   f"({result['resize']})")


@app.command()
def sweep(
    definition: Path = typer.Argument(..., help="Sweep definition (TOML), e.g. "
                                      "generation/table3-fusion.toml."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set n=8 or "
                                   "--set fid.real=runs/prepared/healthy (repeatable)."),
) -> None:
    """Per guidance scale: MS-SSIM diversity, FID/KID, prompt fidelity, concept extrapolation.

    Images go to OUT/images/g<scale>/p<prompt>/ as resumable generation runs (a rerun only
    generates what is missing); writes OUT/sweep.csv (one row per scale), diversity.csv,
    fidelity.csv, records.csv, tradeoff.png/.pdf and provenance.json.
    """
    from mame_eval.metrics.sweep import load_sweep_config, run_sweep

    config = load_sweep_config(definition, set_)
    update, bar = _progress_bar(f"sweep {config.name}", unit="unit")
    with bar:
        report = run_sweep(config, progress=update)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(_sweep_table(report.table))
    typer.echo(f"written: {', '.join(str(f) for f in report.files)}")


def _sweep_table(table) -> str:
    """sweep.csv for the terminal: each estimate with its CI in one column."""
    import pandas as pd

    shown = pd.DataFrame({"guidance": table["guidance"], "n": table["n_images"]})
    for key in table.columns:
        base = key.removesuffix("_adherence")  # adherence CIs are <attribute>_ci_low
        if f"{base}_ci_low" not in table.columns or key.endswith(("_ci_low", "_ci_high")):
            continue
        shown[base.replace("_extrapolated", "|extrap")] = [
            f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
            zip(table[key], table[f"{base}_ci_low"], table[f"{base}_ci_high"], strict=True)]
    if "kid" in table:
        shown["kid"] = [f"{v:.4f} ± {s:.4f}" for v, s in zip(table["kid"], table["kid_std"],
                                                              strict=True)]
    if "mean_adherence" in table:
        shown["mean adherence"] = table["mean_adherence"].map(lambda v: f"{v:.3f}")
    return shown.to_string(index=False)


def _mount_subcommands() -> None:
    """Command groups written beside their libraries (the study app, the XAI commands)."""
    from mame_eval.studies.commands import study_app
    from mame_eval.xai.commands import explain_command, train_cad_command

    app.add_typer(study_app, name="study")
    app.command("explain")(explain_command)
    train_app.command("cad")(train_cad_command)


_mount_subcommands()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main() -> None:
    """Console entry point: library errors become one line and a non-zero exit."""
    # Warnings are for the user, not a traceback: one line without the source line.
    warnings.formatwarning = _one_line_warning
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
