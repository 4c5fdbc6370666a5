"""The ``mame-eval`` command line: parse, call one library function, print. No logic here.

Every library error (:class:`mame_eval.errors.MameError`) becomes one line on stderr and exit
status 1; usage errors exit with 2 (click's convention).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer
from typer.core import TyperGroup

from mame_eval.errors import InputError, MameError
from mame_eval.progress import progress_bar as _progress_bar


class _RecordingGroup(TyperGroup):
    """The top-level command group; it records the command line for provenance (run.json
    names the exact command that made a run), also when the app is invoked in-process."""

    def parse_args(self, ctx, args):
        from mame_eval.provenance import set_command_line

        set_command_line(list(args))
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="mame-eval",
    cls=_RecordingGroup,
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
    mass_diameter: str = typer.Option(
        "0.03,0.08", help="Mass core diameter range LOW,HIGH, fractions of the image width."),
) -> None:
    """Write procedural phantom mammograms as a VinDr-Mammo-format dataset with ground truth."""
    from mame_eval.data.phantoms import write_phantom_dataset

    update, bar = _progress_bar("phantoms")
    with bar:
        summary = write_phantom_dataset(
            out, n=n, seed=seed, population=population, lesion_fraction=lesion_fraction,
            size=_parse_size(size), preview=preview, overwrite=overwrite,
            mass_diameter=tuple(mass_diameter.split(",")),
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
    out: Path | None = typer.Option(None, help="Also write mrmc.json, modalities.csv, "
                                    "provenance.json and run.json into this folder."),
) -> None:
    """Obuchowski–Rockette multi-reader multi-case ROC analysis (Hillis df), like RJafroc."""
    import json

    from mame_eval.journeys.mrmc import mrmc_run
    from mame_eval.studies.ratings import format_mrmc_table

    record = mrmc_run(ratings, reader=reader, modality=modality, case=case, truth=truth,
                      score=score, covariance=covariance, out=out)
    for note in record.notes:  # stderr: --json keeps exactly its documented shape
        typer.echo(f"note: {note}", err=True)
    typer.echo(json.dumps(record.summary, indent=2) if json_out
               else format_mrmc_table(record.summary))


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

    With `pretrained_vae = ...` and `train_decoder_only = true` it fine-tunes the decoder of
    a trained autoencoder instead (encoder and scaling factor kept, so a UNet's latents keep
    their meaning); `lesion_crop_fraction` and `lesion_weight` teach it to draw masses, e.g.
    training/tiny-vae-lesion.toml.
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


_MASK_SHAPE_HELP = ("Shape drawn in the lesion box: box, ellipse (inscribed) or blob (a "
                    "lobulated, lesion-shaped outline, like a brush stroke around a mass). A "
                    "hand-drawn mask: --mask PATH (inpaint) or the playground.")
_BLEND_HELP = ("How the lesion is blended in: poisson (default: no step at the mask edge), "
               "feather (plain feathered composite) or none (raw pipeline output).")


def _mask_shape(shape: str) -> str:
    """``--mask-shape``, checked by the library's own list (one message for a typo)."""
    from mame_eval.generation.masks import MASK_SHAPES

    if shape not in MASK_SHAPES:
        raise InputError(f"--mask-shape {shape!r}: expected one of {', '.join(MASK_SHAPES)}")
    return shape


def _blend_choice(blend: str | None, composite: bool) -> tuple[str, bool]:
    """``--blend`` and ``--composite`` → (blend_method, composite_output) of the library.

    ``--blend none`` and ``--no-composite`` both mean the raw pipeline output; a blend named
    together with ``--no-composite`` contradicts it.
    """
    from mame_eval.generation.inpaint import BLENDS

    if blend is not None and blend not in (*BLENDS, "none"):
        raise InputError(f"--blend {blend!r}: expected one of {', '.join((*BLENDS, 'none'))}")
    if blend == "none":
        return BLENDS[0], False
    if blend is not None and not composite:
        raise InputError(f"--blend {blend} blends the lesion in, --no-composite keeps the raw "
                         "output; give one of them (--blend none is the raw output)")
    return blend or BLENDS[0], composite


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
    mask_shape: str = typer.Option("box", help=_MASK_SHAPE_HELP),
    blend: str = typer.Option(None, help=_BLEND_HELP),
    composite: bool = typer.Option(True, help="Keep the original pixels outside the "
                                   "(feathered) mask; --no-composite: raw pipeline output "
                                   "(the same as --blend none)."),
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

    method, composite = _blend_choice(blend, composite)
    update, bar = _progress_bar("inpaint")
    with bar:
        run = run_inpaint(model, image, out, mask=mask,
                          box=parse_box(box) if box is not None else None,
                          mask_shape=_mask_shape(mask_shape), prompt=prompt, n=n,
                          guidance_scale=guidance, steps=steps, seed=seed,
                          negative_prompt=negative_prompt, composite_output=composite,
                          feather=feather, blend_method=method, batch_size=batch_size,
                          scheduler=scheduler, device=device, dtype=dtype, progress=update)
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
    mask_shape: str = typer.Option("box", help=_MASK_SHAPE_HELP),
    blend: str = typer.Option(None, help=_BLEND_HELP),
    composite: bool = typer.Option(True, help="Keep healthy pixels outside the lesion mask; "
                                   "--no-composite: raw pipeline output (= --blend none)."),
    batch_size: int = typer.Option(4, help="Images per forward pass."),
    scheduler: str = typer.Option("dpm++", help="Scheduler name."),
    device: str = typer.Option(None, help="cuda, cpu, …"),
    dtype: str = typer.Option(None, help="fp16, bf16 or fp32."),
) -> None:
    """A fully synthetic mammogram with a lesion: generate healthy, then inpaint (Fig. 8)."""
    from mame_eval.generation import parse_box
    from mame_eval.generation import synthesize as run_synthesize

    text, side = _prompt(prompt, attributes, laterality)
    method, composite = _blend_choice(blend, composite)
    update, bar = _progress_bar("synthesize")
    with bar:
        run = run_synthesize(model, inpaint_model, text, out, n=n,
                             box=parse_box(box) if box is not None else None,
                             guidance_scale=guidance, inpaint_guidance_scale=inpaint_guidance,
                             steps=steps, seed=seed, negative_prompt=negative_prompt,
                             laterality=side, composite_output=composite,
                             mask_shape=_mask_shape(mask_shape), blend_method=method,
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
    max_pairs: int | None = typer.Option(None, help="all-pairs: measure a uniform random "
                                         "subset of at most this many pairs per scale "
                                         "(seeded by --seed); time grows with the pairs. The "
                                         "CI still resamples images."),
    out: Path = typer.Option(..., help="Output folder (table, figure, provenance, images)."),
) -> None:
    """MS-SSIM diversity per guidance scale (paper Table 3) with bootstrap CIs; with several
    scales, the paired change across guidance with its CI (trends.csv)."""
    from mame_eval.journeys.diversity import diversity_run, parse_guidance

    if model is not None and images is not None:
        raise typer.BadParameter("give --model or --images, not both")
    update, bar = _progress_bar("diversity", unit="scale")
    with bar:
        report = diversity_run(out, model=model, images=images, prompt=prompt,
                               guidance=None if images else parse_guidance(guidance), n=n,
                               steps=steps, protocol=protocol, seed=seed,
                               negative_prompt=negative_prompt, batch_size=batch_size,
                               max_pairs=max_pairs, progress=update)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(report.table.to_string(
        index=False, na_rep="", float_format=lambda v: f"{v:.4f}",
        formatters={"guidance": lambda g: f"{g:g}"}))
    trend = report.summary.get("ms_ssim_trend")
    if trend:
        typer.echo(trend["text"])
    typer.echo(f"written: {', '.join(str(f) for f in report.files)}")


@app.command()
def fid(
    real: Path = typer.Option(..., help="Folder of real images."),
    synthetic: Path = typer.Option(..., help="Folder of synthetic images."),
    features: str = typer.Option("mammonet", help="inception (torch-fidelity's InceptionV3 "
                                 "and its TF1-compatible 299×299 resize: torch-fidelity's FID "
                                 "protocol, not pytorch-fid's or clean-fid's resize), "
                                 "mammonet, a MammoNet folder, or a TorchScript (.pt) or "
                                 "torch.export (.pt2) file: float32 N×3×H×W in [0,1] → N×d."),
    inception_weights: Path | None = typer.Option(None, help="Local InceptionV3 FID weights "
                                                  "(nothing is downloaded)."),
    cache_dir: Path | None = typer.Option(None, help="Feature cache folder (default: none)."),
    n_boot: int = typer.Option(50, min=2, help="Subsampling replicates for the FID interval "
                               "(each evaluates FID at 4 subset sizes) and the PRDC "
                               "intervals."),
    seed: int = typer.Option(0, help="Seed of the subsets (FID, KID, PRDC)."),
    kid_subset_size: int | None = typer.Option(None, help="Images per KID subset, smaller "
                                               "than both sets (default min(1000, N/2))."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    out: Path | None = typer.Option(None, help="Also write fid.csv, provenance.json and "
                                    "run.json into this folder (for `mame-eval report`)."),
) -> None:
    """FID with FID∞ and a 95 % interval for the true FID, KID, and precision / recall /
    density / coverage (k = 3 / 5) with intervals, between two folders of images.

    The plug-in FID is biased upwards at finite N; FID∞ (Chong & Forsyth 2020) extrapolates
    FID over subsets without replacement to 1/N = 0, and the interval is built around it.
    """
    import json

    from mame_eval.journeys.fid import fid_run

    record = fid_run(real, synthetic, features=features, inception_weights=inception_weights,
                     cache_dir=cache_dir, kid_subset_size=kid_subset_size, n_boot=n_boot,
                     seed=seed, out=out)
    for note in record.notes:
        typer.echo(f"note: {note}", err=True)
    result = record.summary
    if json_out:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "resize"}, indent=2))
    else:
        lo, hi = result["fid_ci"]
        typer.echo(f"FID {result['fid']:.4f} (plug-in; bias {result['fid_bias']:+.4f}), "
                   f"FID∞ {result['fid_inf']:.4f} (95 % CI for the true FID {lo:.4f}–{hi:.4f})")
        typer.echo(f"KID {result['kid']:.5f} ± {result['kid_std']:.5f} (sd over subsets of "
                   f"{result['kid_subset_size']})")
        if "precision" in result:
            typer.echo("; ".join(
                f"{name} {result[name]:.3f} [{result[name + '_ci'][0]:.3f}, "
                f"{result[name + '_ci'][1]:.3f}]"
                for name in ("precision", "recall", "density", "coverage")))
        typer.echo(f"n real {result['n_real']}, n synthetic {result['n_synthetic']}; features "
                   f"{result['features']} ({result['resize']})")
    if out is not None:
        typer.echo(f"written: {', '.join(str(f) for f in record.files)}")


@app.command()
def memorization(
    train: Path = typer.Option(..., help="Folder of the training images, as prepared for "
                               "training (e.g. runs/prepared/healthy)."),
    synthetic: Path = typer.Option(..., help="Folder of synthetic images to audit (same size)."),
    out: Path = typer.Option(..., "--out", help="Run folder: memorization.csv, null.csv, "
                             "summary.json, closest_pairs/similarity .png/.pdf, provenance."),
    holdout: Path | None = typer.Option(None, help="Real images the model never saw, prepared "
                                        "the same way (patient-disjoint from --train): the "
                                        "null. Default: leave-one-out of --train."),
    features: str = typer.Option("mammonet", help="Candidate feature space, as for fid: "
                                 "inception, mammonet, a MammoNet folder or a TorchScript .pt."),
    inception_weights: Path | None = typer.Option(None, help="Local InceptionV3 FID weights."),
    alpha: float = typer.Option(0.01, help="False-flag rate: the chance that an image like "
                                "the held-out ones is flagged."),
    k: int = typer.Option(5, "--k", help="Nearest training images per feature space and "
                          "orientation, re-ranked in pixel space."),
    max_shift: int = typer.Option(4, help="Largest shift searched, pixels at the comparison "
                                  "size."),
    mirror: bool = typer.Option(True, help="Also match each image's left/right mirror."),
    compare_size: int = typer.Option(256, help="Longest side of the pixel comparison (larger "
                                     "images are averaged down)."),
    max_null: int = typer.Option(1000, help="At most this many null images (seeded subset)."),
    top: int = typer.Option(8, help="Closest pairs in the figure."),
    seed: int = typer.Option(0, help="Seed of the null subset."),
    cache_dir: Path | None = typer.Option(None, help="Features and re-ranking checkpoints "
                                          "(default OUT/cache; share it between audits)."),
    device: str = typer.Option("cpu", help="cpu, cuda, …"),
) -> None:
    """Memorisation audit: which synthetic images copy a training image?

    Nearest training images in a feature space and a pixel thumbnail (left/right mirror
    too), re-ranked by MS-SSIM after shift and brightness/contrast alignment; flagged when
    closer to a training image than held-out real images are (false-flag rate --alpha).
    """
    from mame_eval.journeys.memorization import memorization_run
    from mame_eval.metrics.memorization import MatchSettings

    settings = MatchSettings(k=k, max_shift=max_shift, mirror=mirror, compare_size=compare_size)
    update, bar = _progress_bar("memorization")
    with bar:
        run = memorization_run(train, synthetic, out, holdout=holdout, features=features,
                               inception_weights=inception_weights, alpha=alpha,
                               settings=settings, max_null=max_null, top=top, seed=seed,
                               cache_dir=cache_dir, device=device, progress=update)
    for note in run.notes:
        typer.echo(f"note: {note}", err=True)
    s = run.summary
    lo, hi = s["copy_rate_ci"]
    typer.echo(f"copy rate {s['flagged']}/{s['n_synthetic']} = {s['copy_rate']:.4f} (95 % CI "
               f"{lo:.4f}–{hi:.4f}); flag: MS-SSIM > {s['threshold']:.4f}, false-flag rate "
               f"{s['alpha']:g} calibrated on {s['n_null']} null images: {s['null_source']}")
    if s["dcr_auroc"] is not None:
        alo, ahi = s["dcr_auroc_ci"]
        typer.echo(f"synthetic images closer to the training set than the null images: AUROC "
                   f"{s['dcr_auroc']:.3f} (95 % CI {alo:.3f}–{ahi:.3f}; 0.5 = no closer)")
    typer.echo(f"written: {', '.join(str(f) for f in run.files)}")


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
    from mame_eval.journeys.sweep import load_sweep_config, run_sweep

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


@app.command()
def report(
    definition: Path = typer.Argument(..., help="Report definition (TOML), e.g. "
                                      "reports/paper.toml or reports/demo.toml."),
    out: Path = typer.Option(..., "--out", help="Output folder: report.html, report.pdf, "
                             "assets/, run.json."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set root=runs/x "
                                   "(repeatable)."),
) -> None:
    """Regenerate the paper's figures and tables from existing run folders: one self-contained
    HTML page and one PDF. A section whose run is missing says so and shows the command that
    would produce it."""
    from mame_eval.journeys.report import report_run

    update, bar = _progress_bar("report", unit="section")
    with bar:
        record = report_run(definition, out, set_, progress=update)
    for note in record.notes:
        typer.echo(f"note: {note}", err=True)
    s = record.summary
    typer.echo(f"report of {s['runs']} run(s) in {s['sections']} sections "
               f"({s['missing']} run(s) missing): {s['html']} and {s['pdf']}")


def parse_groups(items: list[str]) -> dict[str, Path]:
    """``["real=prep/lesion", "inpainted=runs/x"]`` → ``{"real": Path(...), ...}``."""
    groups: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--group {item!r}: expected NAME=DIR")
        if name.strip() in groups:
            raise InputError(f"--group {name.strip()!r} given twice")
        groups[name.strip()] = Path(path.strip())
    return groups


@app.command("explain")
def explain_command(
    images: Path | None = typer.Option(
        None, "--images", help="Images to explain: a folder of images, or a prepared lesion "
        "folder (with images/ and masks/)."),
    masks: Path | None = typer.Option(
        None, "--masks", help="Lesion masks of --images, same file names (default: "
        "DIR/masks for a prepared lesion folder, else DIR/../masks when it exists)."),
    cad: Path | None = typer.Option(
        None, "--cad", help="Classifier: a MammoNet folder (mame-eval train cad) or a "
        "TorchScript file. Default: the shipped MammoNet-tiny."),
    methods: str = typer.Option("gradcam,saliency,occlusion", "--methods",
                                help="Comma-separated attribution methods."),
    group: list[str] = typer.Option(
        [], "--group", help="NAME=DIR: one more group to explain and compare (repeatable); "
        "DIR as for --images, masks found the same way."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    name: str = typer.Option("images", "--name", help="Group name of --images."),
    layer: str | None = typer.Option(None, "--layer", help="Grad-CAM layer of a TorchScript "
                                     "classifier (dotted module name, e.g. layer4)."),
    lesion_index: int | None = typer.Option(None, "--lesion-index", help="Output index of the "
                                            "lesion class of a TorchScript classifier."),
    channels: int | None = typer.Option(None, "--channels", help="Input channels of a "
                                        "TorchScript classifier (1 or 3; default 1)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Resize side for a "
                                          "TorchScript classifier (default: none)."),
    occlusion_window: int | None = typer.Option(
        None, help="Occlusion patch side in classifier-input pixels (default size/16: 8 px "
        "at 128, no larger than a phantom mass)."),
    occlusion_stride: int | None = typer.Option(None, help="Occlusion step (default "
                                                "window/2)."),
    smoothgrad: int = typer.Option(0, help="SmoothGrad samples for Grad-CAM and saliency "
                                   "(0: off)."),
    tolerance: float = typer.Option(0.0, help="Pointing-game tolerance in pixels."),
    max_images: int | None = typer.Option(None, help="At most this many images per group."),
    heatmap_rows: int = typer.Option(6, help="Rows of heatmaps.png."),
    batch_size: int = typer.Option(8, help="Images per batch."),
    seed: int = typer.Option(0, help="Seed of the bootstrap (and SmoothGrad noise)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    sanity: bool = typer.Option(True, "--sanity/--no-sanity", help="Model-randomisation "
                                "sanity check (Adebayo et al. 2018): sanity.csv, sanity.png."),
    sanity_images: int = typer.Option(8, help="Images per group for the sanity check."),
) -> None:
    """Grad-CAM / saliency / occlusion heatmaps of a lesion classifier, scored against the
    lesion masks (pointing game, relevance mass and rank, energy pointing game), with group
    comparisons (e.g. real vs inpainted lesions)."""
    from mame_eval.journeys.explain import default_cad, explain, render_summary

    cad = cad if cad is not None else default_cad()  # fail before the progress bar starts
    noise = {"samples": smoothgrad, "seed": seed} if smoothgrad > 0 else None
    update, bar = _progress_bar("explain", "img")
    with bar:
        result = explain(
            images, masks, groups=parse_groups(group), cad=cad,
            methods=[m.strip() for m in methods.split(",") if m.strip()], out=out, name=name,
            layer=layer, lesion_index=lesion_index, channels=channels, image_size=image_size,
            batch_size=batch_size, occlusion_window=occlusion_window,
            occlusion_stride=occlusion_stride, noise_tunnel=noise, tolerance=tolerance,
            max_images=max_images, heatmap_rows=heatmap_rows, seed=seed, device=device,
            sanity=sanity, sanity_images=sanity_images, progress=update)
    typer.echo(render_summary(result))


@train_app.command("cad")
def train_cad_command(
    config: Path = typer.Argument(..., help="Training config (TOML), e.g. "
                                  "training/cad-tiny.toml."),
    set: list[str] = typer.Option([], "--set", help="Override a config key: key=value "
                                  "(dotted for tables, e.g. model.width=32); repeatable."),
) -> None:
    """Train MammoNet (lesion + attribute heads) on a prepared dataset; writes the model,
    metrics.json (held-out lesion AUROC with CI, attribute accuracies) and provenance."""
    from mame_eval.cad.train import load_cad_config, train_cad

    cfg = load_cad_config(config, set)
    update, bar = _progress_bar("train cad", "step")
    with bar:
        result = train_cad(cfg, progress=update)
    typer.echo(result.summary())


@app.command()
def augment(
    config: Path = typer.Argument(..., help="Study definition (TOML), e.g. "
                                  "training/augment-tiny.toml."),
    out: Path = typer.Option(..., help="Study folder (created; a rerun resumes it)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set "
                                   "seeds=[0,1,2,3] or --set training.steps=400 (repeatable)."),
) -> None:
    """Augmentation study: does adding synthetic (inpainted) lesions make a CAD classifier
    better than real lesions alone, than classic augmentation, at smaller real training sets?

    Trains MammoNet per arm × synthetic ratio × real fraction × seed (same steps, same real
    test set) and writes OUT/augment.csv, comparison.csv (paired DeLong and seed-level
    differences to the baseline), augment.png/.pdf and provenance.json. Works under
    `accelerate launch` (units split across processes).
    """
    from mame_eval.journeys.augment import load_augment_config, run_augment

    cfg = load_augment_config(config, set_)
    update, bar = _progress_bar(f"augment {cfg.name}", unit="task")
    with bar:
        record = run_augment(cfg, out, progress=update)
    if record is None:  # another process of a multi-process launch: the main one reports
        return
    for note in record.notes:
        typer.echo(f"note: {note}", err=True)
    s = record.summary
    pct = f"{100 * s['level']:g}%"
    typer.echo(f"test set: {s['n_test_pos']} lesion + {s['n_test_neg']} healthy real images; "
               f"{len(s['seeds'])} seeds; {s['units']} models ({s['units_trained']} trained now)")
    table = record.tables["augment"]
    per_arm = table.groupby(["arm", "synthetic_ratio", "real_fraction"], sort=False)
    typer.echo(f"test AUROC, mean over seeds (mean {pct} DeLong CI; seed min–max):")
    for (arm, ratio, fraction), g in per_arm:
        name = f"{arm} ×{ratio:g}" if arm == "synthetic" else arm
        typer.echo(f"  {name:<16} real {fraction:<5g} {g['auroc'].mean():.3f} "
                   f"({g['ci_low'].mean():.3f}–{g['ci_high'].mean():.3f}; "
                   f"{g['auroc'].min():.3f}–{g['auroc'].max():.3f}; n={len(g)} seeds)")
    typer.echo(f"difference to the baseline ({pct} CIs: DeLong over test cases | t over seeds):")
    for c in s["comparisons"]:
        name = f"{c['arm']} ×{c['synthetic_ratio']:g}" if c["arm"] == "synthetic" else c["arm"]
        lo, hi = c["seed_ci"]
        seed_ci = "n/a" if lo is None else f"{lo:+.3f}, {hi:+.3f}"
        typer.echo(f"  {name:<16} real {c['real_fraction']:<5g} {c['difference']:+.3f} "
                   f"[{c['delong_ci'][0]:+.3f}, {c['delong_ci'][1]:+.3f}] p={c['delong_p']:.3g}"
                   f" | [{seed_ci}] (n={c['n_seeds']} seeds)")
    typer.echo(f"written: {', '.join(str(f) for f in record.files)}")


def _mount_subcommands() -> None:
    """The study command group, written beside its library (mame_eval.studies.commands)."""
    from mame_eval.studies.commands import study_app

    app.add_typer(study_app, name="study")


_mount_subcommands()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


#: library parameter → the flag that sets it, where the two names differ beyond "_" vs "-"
_FLAGS = {"guidance_scale": "--guidance", "inpaint_guidance_scale": "--inpaint-guidance",
          "images_dir": "--images", "masks_dir": "--masks", "composite_output": "--composite"}


def flag_message(exc: MameError) -> str:
    """The error's message in the CLI's terms: a message about library parameter ``param``
    names the flag instead (``guidance_scale -1`` → ``--guidance -1``)."""
    message = str(exc)
    param = getattr(exc, "param", None)
    if param and message.startswith(param):
        flag = _FLAGS.get(param, "--" + param.replace("_", "-"))
        message = flag + message[len(param):]
    return message


def main() -> None:
    """Console entry point: library errors become one line and a non-zero exit."""
    # Warnings are for the user, not a traceback: one line without the source line.
    warnings.formatwarning = _one_line_warning
    try:
        app()
    except MameError as exc:
        typer.echo(f"error: {flag_message(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted — rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
