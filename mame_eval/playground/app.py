"""The generation playground: a Streamlit face over mame_eval.generation (``mame-eval playground``).

Tabs: text to image (prompt pickers from :mod:`mame_eval.prompts`, or a checked free prompt),
inpaint (draw the lesion on a canvas), healthy + lesion (paper Fig. 8 in one click), and the
gallery, whose selection is saved as a run folder with ``manifest.jsonl``. Models are loaded
once per server process (``st.cache_resource``) and used by one generation at a time (a lock
per model); every run reports its denoising steps and can be stopped. Settings come from the
environment set by :func:`mame_eval.playground.serve_command`.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path

import numpy as np
import streamlit as st

# Imported here, once, before any widget: diffusers resolves these names lazily, and a lazy
# import first reached inside a script run that Streamlit interrupts can leave it half done.
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline  # noqa: F401
from PIL import Image

from mame_eval.errors import MameError
from mame_eval.generation import generate, inpaint, synthesize
from mame_eval.generation.inpaint import BLENDS, load_image, parse_box
from mame_eval.generation.masks import MASK_SHAPES, shape_mask
from mame_eval.models.loading import SCHEDULERS
from mame_eval.playground import ENV_DATA, ENV_FAMILY, ENV_INPAINT, ENV_MODEL, ENV_WORKSPACE
from mame_eval.playground.session import (
    GalleryItem,
    StepCounter,
    StepReporter,
    attribute_choices,
    build_prompt,
    check_free_prompt,
    check_mask_inside,
    fit_image,
    gallery_items,
    load_slot,
    mask_from_drawing,
    model_family,
    save_selection,
    save_source,
    use_scheduler,
)
from mame_eval.prompts import Family

CANVAS = 384  # canvas side in screen pixels (the image is scaled to it)
FILL = "rgba(255, 90, 60, 0.45)"

MODEL = os.environ.get(ENV_MODEL) or None
INPAINT_MODEL = os.environ.get(ENV_INPAINT) or None
WORKSPACE = Path(os.environ.get(ENV_WORKSPACE, "runs/playground"))
DATA = Path(os.environ[ENV_DATA]) if os.environ.get(ENV_DATA) else None
FAMILY = model_family(MODEL, os.environ.get(ENV_FAMILY) or None)


@st.cache_resource(show_spinner="loading the model …")
def slot(model: str | None, task: str):
    """One pipeline per model and task for the whole server: every session shares it."""
    return load_slot(model, task)


def session_id() -> str:
    return st.session_state.setdefault("sid", uuid.uuid4().hex[:10])


def scratch(kind: str) -> Path:
    """A new run folder for one generation of this session."""
    count = st.session_state.setdefault("runs", 0) + 1
    st.session_state["runs"] = count
    return WORKSPACE / ".scratch" / session_id() / f"{count:03d}-{kind}"


def gallery() -> list[GalleryItem]:
    return st.session_state.setdefault("gallery", [])


def show_error(exc: Exception) -> None:
    st.error(str(exc), icon="⚠️")


def mask_problem(key: str, clicked: bool, problem: str | None, mask) -> bool:
    """Show why a drawn mask cannot be used; True when there is such a problem to show.

    The message of a click stays on the reruns that follow (the canvas component reports its
    drawing back and reruns the script, which would otherwise wipe the message a moment after
    it appeared) for as long as the same problem remains; the next click or a fixed mask
    clears it.
    """
    signature = (problem, mask is None)
    if clicked:
        st.session_state.pop(key, None)
        if problem or mask is None:
            st.session_state[key] = (problem or "draw the lesion region first", signature)
    stored = st.session_state.get(key)
    if stored is None:
        return False
    if stored[1] != signature:
        st.session_state.pop(key, None)
        return False
    show_error(MameError(stored[0]))
    return True


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- running


def run_with_progress(kind: str, slots: list, total_steps: int, work) -> object | None:
    """Run ``work(pipes, on_step)`` holding every slot's lock, with a progress bar and Stop.

    Stop (or any other click) reruns the script; Streamlit then interrupts this run at its
    next progress update, inside the sampling loop, and the locks are released on the way out.
    """
    bar = st.progress(0.0, text="starting …")
    stop = st.empty()
    stop.button("Stop", key=f"stop-{kind}", type="secondary")
    st.session_state["running"] = {"kind": kind, "done": 0, "total": total_steps}
    counter = StepCounter(total_steps)

    def on_step() -> None:
        bar.progress(counter.step(), text=counter.text())
        st.session_state["running"]["done"] = counter.done

    def waiting(seconds: float) -> None:
        bar.progress(0.0, text=f"waiting for another session's generation on this model "
                               f"({seconds:.0f} s) …")

    pipes = []
    try:
        with _hold_all(slots, waiting) as held:
            pipes = [StepReporter(p, on_step) for p in held]
            result = work(pipes)
    except MameError as exc:
        st.session_state["running"] = None
        bar.empty()
        stop.empty()
        show_error(exc)
        return None
    st.session_state["running"] = None
    stop.empty()
    bar.progress(1.0, text=f"done: {counter.text()}")
    return result


class _hold_all:
    """Hold several model slots, always in the order given (no two sessions deadlock)."""

    def __init__(self, slots, waiting):
        self.slots, self.waiting, self.contexts = slots, waiting, []

    def __enter__(self):
        pipes = []
        for s in self.slots:
            ctx = s.hold(session_id(), self.waiting)
            pipes.append(ctx.__enter__())
            self.contexts.append(ctx)
        return pipes

    def __exit__(self, *exc):
        for ctx in reversed(self.contexts):
            ctx.__exit__(*exc)
        return False


def stopped_notice(kind: str) -> None:
    """After a Stop: say where the interrupted generation was."""
    running = st.session_state.get("running")
    if running and running["kind"] == kind and st.session_state.get(f"stop-{kind}"):
        st.warning(f"Stopped at step {running['done']} of {running['total']}; the images "
                   "finished before are in the gallery.")
        st.session_state["running"] = None


def add_to_gallery(run: Path) -> list[GalleryItem]:
    items = gallery_items(run)
    gallery().extend(items)
    return items


# --------------------------------------------------------------------------- prompt builder


def prompt_builder(prefix: str) -> str | None:
    """Pickers of the model's family, or a typed prompt checked by the same grammar."""
    mode = st.radio("Build the prompt with", ["Pickers", "Free prompt"], horizontal=True,
                    key=f"{prefix}-mode")
    if mode == "Free prompt":
        text = st.text_input("Prompt", key=f"{prefix}-free",
                             placeholder=build_prompt(FAMILY, "CC", "hologic", area="medium")
                             if FAMILY is not Family.SIEMENS
                             else build_prompt(FAMILY, "CC", density="low"))
        try:
            prompt = check_free_prompt(text, FAMILY)
        except MameError as exc:
            show_error(exc)
            return None
        st.caption(f"prompt: `{prompt}`")
        return prompt
    choices = attribute_choices(FAMILY)
    cols = st.columns(4)
    vendor = cols[0].selectbox("Vendor", choices["vendor"], key=f"{prefix}-vendor") \
        if "vendor" in choices else None
    view = cols[1].selectbox("View", choices["view"], key=f"{prefix}-view")
    density = area = None
    if FAMILY is Family.FUSION:
        # A fusion model names density, area or both; the pickers cannot form anything else.
        which = cols[2].selectbox("Attributes", ["density", "area", "density and area",
                                                 "area and density"], key=f"{prefix}-which")
        if "density" in which:
            density = cols[3].selectbox("Density", choices["density"], key=f"{prefix}-density")
        if "area" in which:
            area = cols[3].selectbox("Area", choices["area"], key=f"{prefix}-area")
        first = which.startswith("density")
    else:
        if "density" in choices:
            density = cols[2].selectbox("Density", choices["density"], key=f"{prefix}-density")
        if "area" in choices:
            area = cols[2].selectbox("Area", choices["area"], key=f"{prefix}-area")
        first = True
    prompt = build_prompt(FAMILY, view, vendor, density, area, first)
    st.caption(f"prompt: `{prompt}`")
    return prompt


def sampling_options(prefix: str, n_default: int = 4, scheduler: bool = True) -> dict:
    cols = st.columns(5)
    options = {
        "guidance_scale": cols[0].number_input("Guidance", 0.0, 30.0, 4.0, 0.5,
                                               key=f"{prefix}-guidance"),
        "steps": int(cols[1].number_input("Steps", 1, 150, 24, key=f"{prefix}-steps")),
        "seed": int(cols[2].number_input("Seed", 0, 2**31 - 1, 0, key=f"{prefix}-seed")),
        "n": int(cols[3].number_input("Images", 1, 16, n_default, key=f"{prefix}-n")),
    }
    if scheduler:
        options["scheduler"] = cols[4].selectbox("Scheduler", list(SCHEDULERS),
                                                 key=f"{prefix}-scheduler")
    options["negative_prompt"] = st.text_input("Negative prompt", key=f"{prefix}-negative",
                                               placeholder="e.g. white background")
    return options


def show_items(items: list[GalleryItem], columns: int = 4, extra=None) -> None:
    cols = st.columns(columns)
    for k, item in enumerate(items):
        with cols[k % columns]:
            st.image(str(item.path), caption=item.caption(), width="stretch")
            if extra:
                extra(item)


# --------------------------------------------------------------------------- tabs


def text_to_image_tab() -> None:
    stopped_notice("txt2img")
    prompt = prompt_builder("t2i")
    options = sampling_options("t2i")
    laterality = st.radio("Laterality", ["L", "R"], horizontal=True, key="t2i-lat",
                          help="The model draws left breasts; R mirrors them, as the paper did.")
    if not st.button("Generate", type="primary", key="t2i-go", disabled=prompt is None):
        return
    t2i = slot(MODEL, "txt2img")
    out = scratch("txt2img")
    shown = st.empty()

    def on_image(done: int, total: int) -> None:
        if done:
            with shown.container():
                show_items(gallery_items(out))

    def work(pipes):
        use_scheduler(pipes[0], options["scheduler"])
        return generate(None, prompt, out, n=options["n"],
                        guidance_scale=options["guidance_scale"], steps=options["steps"],
                        seed=options["seed"], negative_prompt=options["negative_prompt"],
                        laterality=laterality, batch_size=1, pipe=pipes[0],
                        progress=on_image)

    run = run_with_progress("txt2img", [t2i], options["n"] * options["steps"], work)
    if run is not None:
        items = add_to_gallery(run.out)
        with shown.container():
            show_items(items)
        st.success(f"{len(items)} image(s) added to the gallery")


def source_image(prefix: str) -> np.ndarray | None:
    """The image to inpaint: uploaded, from the gallery, or a prepared one."""
    sources = ["Upload", "From the gallery"] + (["Prepared image"] if DATA else [])
    how = st.radio("Image", sources, horizontal=True, key=f"{prefix}-src")
    side = slot(INPAINT_MODEL, "inpaint").pipe.unet.config.sample_size * \
        slot(INPAINT_MODEL, "inpaint").pipe.vae_scale_factor
    image = None
    if how == "Upload":
        up = st.file_uploader("Mammogram (PNG or JPEG)", type=["png", "jpg", "jpeg"],
                              key=f"{prefix}-upload")
        if up is not None:
            try:
                image = np.asarray(Image.open(up).convert("RGB"))
            except OSError as exc:
                st.error(f"{up.name}: not a readable image ({exc})")
    elif how == "From the gallery":
        items = gallery()
        if not items:
            st.info("The gallery is empty: generate an image first, or upload one.")
        else:
            k = st.selectbox("Gallery image", range(len(items)), key=f"{prefix}-gal",
                             format_func=lambda i: f"{i}: {items[i].row.get('prompt', '')} "
                                                   f"(seed {items[i].row.get('seed')})")
            image = load_image(items[k].path)
    else:
        files = sorted((DATA / "healthy").glob("*.png"))[:500]
        if not files:
            st.info(f"{DATA / 'healthy'}: no prepared images")
        else:
            f = st.selectbox("Prepared image", files, key=f"{prefix}-prep",
                             format_func=lambda p: p.name)
            image = load_image(f)
    if image is None:
        return None
    image, note = fit_image(image, side)
    if note:
        st.caption(note)
    return image


def draw_mask(prefix: str, background: np.ndarray | None, height: int,
              width: int) -> tuple[np.ndarray | None, str | None]:
    """A canvas over ``background``, or a typed box; → (mask or None, error or None)."""
    from streamlit_drawable_canvas import st_canvas

    cols = st.columns([1, 1, 2])
    tool = cols[0].radio("Draw with", ["Brush", "Box", "Circle"], key=f"{prefix}-tool",
                         horizontal=True)
    brush = cols[1].slider("Brush width (px on screen)", 4, 60, 24, key=f"{prefix}-brush")
    typed = cols[2].text_input("…or type a box x0,y0,x1,y1 (image pixels)",
                               key=f"{prefix}-box", placeholder="e.g. 60,50,76,66")
    shape = cols[2].selectbox("Shape in the typed box", MASK_SHAPES, index=1,
                              key=f"{prefix}-shape")
    mode = {"Brush": "freedraw", "Box": "rect", "Circle": "circle"}[tool]
    bg = Image.fromarray(background).resize((CANVAS, CANVAS * height // width),
                                            Image.NEAREST) if background is not None else None
    result = st_canvas(fill_color=FILL, stroke_width=brush if mode == "freedraw" else 1,
                       stroke_color=FILL, background_color="#202020",
                       background_image=bg, height=CANVAS * height // width, width=CANVAS,
                       drawing_mode=mode, return_image_data=True, key=f"{prefix}-canvas")
    try:
        if typed.strip():
            return shape_mask(shape, parse_box(typed), height, width, rng=0), None
        drawn = result.image_data if result is not None else None
        return mask_from_drawing(drawn, height, width), None
    except MameError as exc:
        return None, str(exc)


def inpaint_tab() -> None:
    stopped_notice("inpaint")
    image = source_image("inp")
    if image is None:
        return
    h, w = image.shape[:2]
    st.write("Draw the lesion region on the image (brush, box or circle):")
    mask, problem = draw_mask("inp", image, h, w)
    cols = st.columns(4)
    guidance = cols[0].number_input("Guidance", 0.0, 30.0, 4.0, 0.5, key="inp-guidance")
    steps = int(cols[1].number_input("Steps", 1, 150, 24, key="inp-steps"))
    seed = int(cols[2].number_input("Seed", 0, 2**31 - 1, 0, key="inp-seed"))
    n = int(cols[3].number_input("Variants", 1, 8, 2, key="inp-n"))
    method = st.radio("Blend", BLENDS, horizontal=True, key="inp-blend",
                      help="poisson: the lesion's surroundings are matched to the tissue "
                           "around it (no seam); feather: a plain feathered composite.")
    clicked = st.button("Inpaint", type="primary", key="inp-go")
    if mask_problem("inp-problem", clicked, problem, mask) or not clicked:
        return
    warning = check_mask_inside(mask, image)
    if warning:
        st.warning(warning)
    out = scratch("inpaint")
    source = save_source(image, out.parent, f"{out.name}-source.png")

    def work(pipes):
        return inpaint(None, source, out, mask_array=mask, n=n, guidance_scale=guidance,
                       steps=steps, seed=seed, blend_method=method, batch_size=1,
                       pipe=pipes[0])

    run = run_with_progress("inpaint", [slot(INPAINT_MODEL, "inpaint")], n * steps, work)
    if run is None:
        return
    items = add_to_gallery(run.out)
    before, after = st.columns(2)
    before.image(image, caption="before", width="stretch")
    overlay = image.copy()
    overlay[mask] = (0.55 * overlay[mask] + 0.45 * np.array([255, 90, 60])).astype(np.uint8)
    before.image(overlay, caption="mask", width="stretch")
    with after:
        show_items(items, columns=2)


def healthy_lesion_tab() -> None:
    stopped_notice("synth")
    prompt = prompt_builder("syn")
    options = sampling_options("syn", n_default=1, scheduler=False)
    place = st.radio("Lesion", ["At a random place inside the breast", "Where I draw"],
                     key="syn-place", horizontal=True)
    t2i = slot(MODEL, "txt2img")
    side = int(t2i.pipe.unet.config.sample_size * t2i.pipe.vae_scale_factor)
    mask, problem, shape = None, None, "ellipse"
    if place == "Where I draw":
        last = st.session_state.get("syn-last")
        st.write("Draw where the lesion goes" + (" (over the last healthy image)" if last
                                                is not None else " (the breast is on the left)"))
        mask, problem = draw_mask("syn", last, side, side)
    else:
        shape = st.selectbox("Mask shape", MASK_SHAPES, index=1, key="syn-shape")
    clicked = st.button("Generate healthy + lesion", type="primary", key="syn-go",
                        disabled=prompt is None)
    drawn = place == "Where I draw"
    if (drawn and mask_problem("syn-problem", clicked, problem, mask)) or not clicked:
        return
    out = scratch("synthesize")
    inp = slot(INPAINT_MODEL, "inpaint")

    def work(pipes):
        return synthesize(None, None, prompt, out, n=options["n"], mask=mask, mask_shape=shape,
                          guidance_scale=options["guidance_scale"], steps=options["steps"],
                          seed=options["seed"], negative_prompt=options["negative_prompt"],
                          batch_size=1, pipe=pipes[0], inpaint_pipe=pipes[1])

    run = run_with_progress("synth", [t2i, inp], 2 * options["n"] * options["steps"], work)
    if run is None:
        return
    items = add_to_gallery(run.out)
    for item in items:
        healthy = load_image(item.run / item.row["healthy_file"])
        st.session_state["syn-last"] = healthy
        cols = st.columns(3)
        cols[0].image(healthy, caption="healthy", width="stretch")
        cols[1].image(str(item.run / item.row["mask_file"]),
                      caption=f"mask ({item.row['box_source']})", width="stretch")
        cols[2].image(str(item.path), caption="with lesion · " + item.caption(),
                      width="stretch")


def gallery_tab() -> None:
    items = gallery()
    if not items:
        st.info("Nothing generated yet in this session.")
        return
    st.write(f"{len(items)} image(s) in this session. Tick the ones to keep.")

    def tick(item: GalleryItem) -> None:
        st.checkbox("select", key=f"sel-{item.path}")

    show_items(items, columns=6, extra=tick)
    selected = [i for i in items if st.session_state.get(f"sel-{i.path}")]
    with st.form("save"):
        # The default is fixed per session: a widget whose default changes is a new widget.
        default = st.session_state.setdefault("save-default",
                                              time.strftime("selection-%Y%m%d-%H%M%S"))
        name = st.text_input("Run folder name", value=default, key="save-name")
        saved = st.form_submit_button(f"Save {len(selected)} selected")
    if saved:
        try:
            if not name.strip() or "/" in name or name.startswith("."):
                raise MameError(f"folder name {name!r}: expected a plain name such as "
                                "'my-selection'")
            out = save_selection(selected, WORKSPACE / name.strip())
        except MameError as exc:
            show_error(exc)
            return
        st.success(f"Saved {len(selected)} image(s) to {out}")
        st.code(f"mame-eval diversity --images {out} --out {out}-diversity\n"
                f"mame-eval study create --synthetic {out} --real REAL_DIR …\n"
                f"mame-eval explain --images {out} --masks {out}/masks --out {out}-explain",
                language="bash")


def main() -> None:
    st.set_page_config(page_title="MAM-E playground", layout="wide")
    st.title("MAM-E playground")
    st.caption(f"text-to-image: {MODEL or 'embedded MAM-E-tiny'} ({FAMILY.value} prompts) · "
               f"inpainting: {INPAINT_MODEL or 'embedded MAM-E-tiny-inpaint'} · "
               f"saving to {WORKSPACE}")
    tabs = st.tabs(["Text to image", "Inpaint", "Healthy + lesion", "Gallery & save"])
    with tabs[0]:
        text_to_image_tab()
    with tabs[1]:
        inpaint_tab()
    with tabs[2]:
        healthy_lesion_tab()
    with tabs[3]:
        gallery_tab()


main()
