"""``mame-eval demo``: the offline journey end to end on phantoms (DESIGN §2, §5).

phantoms → prepare (128 px, the embedded models' size) → ``diversity`` of MAM-E-tiny over
guidance (the Table-3 analogue) → a small ``sweep`` (diversity, FID on MammoNet features,
prompt fidelity, concept extrapolation) → ``synthesize`` (healthy image + inpainted lesion) →
``explain`` (real vs inpainted lesions) → ``study create`` (blinded real-vs-synthetic cases,
reader links). Each step writes into its own sub-folder of ``out`` and is resumable: rerunning
the demo re-uses what is already there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mame_eval.reports.contact_sheet import contact_sheet

#: The resolution of the embedded models: the demo prepares its phantoms at it.
DEMO_SIZE = 128
SWEEP_PROMPTS = (
    "a hologic mammogram in CC view with small area",
    "a hologic mammogram in MLO view with big area",
    "a siemens mammogram in CC view with very low density",
    "a siemens mammogram in MLO view with very high density",
    "a siemens mammogram in MLO view with small area",  # never trained: extrapolation
)
DIVERSITY_PROMPT = "a hologic mammogram in MLO view with medium area"
STEPS = 24  # DPM-Solver++ steps, as the paper


@dataclass
class DemoSummary:
    """Headline numbers and file locations of a demo run."""

    out: Path
    lines: list[tuple[str, str]] = field(default_factory=list)
    wall_time_s: float = 0.0

    def add(self, label: str, value: str) -> None:
        self.lines.append((label, value))

    def render(self) -> str:
        width = max(len(k) for k, _ in self.lines) if self.lines else 0
        body = "\n".join(f"  {k.ljust(width)}  {v}" for k, v in self.lines)
        return f"demo finished in {self.wall_time_s:.0f} s — {self.out}\n{body}"


def _prepared_preview(prepared: Path, out: Path, n: int = 16) -> Path:
    """Contact sheet of the first prepared healthy and lesion images, boxes drawn."""
    images, captions, boxes = [], [], []
    for sub, key in (("healthy", None), ("lesion", "box")):
        meta = prepared / sub / "metadata.jsonl"
        rows = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
        for row in rows[: n // 2]:
            images.append(np.asarray(Image.open(prepared / sub / row["file_name"]))[..., 0])
            captions.append(row["prompt"].replace("a ", "", 1).replace(" mammogram", "")[:48])
            boxes.append([tuple(row[key])] if key else [])
    return contact_sheet(images, out, captions=captions, boxes=boxes,
                         title=f"prepared (mirrored, {DEMO_SIZE} px, prompts)")


def _ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} (95 % CI {lo:.{digits}f}–{hi:.{digits}f})"


def run_demo(out: Path, n: int = 200, seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> DemoSummary:
    """The whole offline journey on ``n`` phantoms; returns the summary to print."""
    from mame_eval.data.phantoms import write_phantom_dataset
    from mame_eval.data.prepare import PrepareSettings, prepare_dataset
    from mame_eval.generation import synthesize
    from mame_eval.journeys.diversity import diversity_run
    from mame_eval.journeys.explain import default_cad, explain
    from mame_eval.journeys.sweep import FidSettings, SweepConfig, run_sweep
    from mame_eval.models import default_model, load_pipeline
    from mame_eval.studies.study import create_study

    start = time.perf_counter()
    out = Path(out)
    total = 7
    summary = DemoSummary(out)

    def step(k: int) -> None:
        if progress:
            progress(k, total)

    # Fail before any work when the embedded models are missing.
    default_model("txt2img")
    default_model("inpaint")
    default_cad()
    step(0)

    raw = out / "phantoms"
    if not (raw / "breast-level_annotations.csv").is_file():
        write_phantom_dataset(raw, n=n, seed=seed, population="mixed", lesion_fraction=0.3,
                              size=(320, 256), preview=True)
    summary.add("phantoms", f"{raw} ({n} images; preview {raw / 'preview.png'})")
    prepared = out / "prepared"
    report = prepare_dataset(raw, prepared, PrepareSettings(size=DEMO_SIZE), workers=1)
    c = report.counts
    sheet = _prepared_preview(prepared, out / "prepared_preview.png")
    summary.add("prepared", f"{prepared}: {c['healthy']} healthy, {c['lesion_samples']} lesion "
                f"samples, {c['skipped']} skipped ({report.family} prompts); preview {sheet}")
    step(1)

    pipe = load_pipeline(None, task="txt2img", device="cpu")
    div = diversity_run(out / "diversity", prompt=DIVERSITY_PROMPT,
                        guidance=[4.0, 6.0, 8.0, 10.0, 12.0, 14.0], n=8, steps=STEPS,
                        seed=seed, batch_size=8, pipe=pipe)
    first, last = div.table.iloc[0], div.table.iloc[-1]
    at4 = _ci(first["mean"], first["ci_low"], first["ci_high"])
    at14 = _ci(last["mean"], last["ci_low"], last["ci_high"])
    summary.add("diversity", f"MS-SSIM at guidance 4: {at4}; at 14: {at14} (lower = more "
                f"diverse; n = {int(first['n_images'])} images per scale) — "
                f"{out / 'diversity' / 'diversity.png'}")
    step(2)

    config = SweepConfig(
        name="demo", out=out / "sweep", prompts=list(SWEEP_PROMPTS), guidance=[2.0, 4.0, 8.0],
        n=6, steps=STEPS, seed=seed, batch_size=6, real_baseline=prepared / "healthy",
        fid=FidSettings(real=prepared / "healthy", features="mammonet", n_boot=100))
    sweep = run_sweep(config, pipe=pipe)
    row = sweep.table.set_index("guidance").loc[4.0]
    fidelity = sweep.tables["fidelity"]
    fidelity = fidelity[fidelity["guidance"] == 4.0].set_index("attribute")
    names = {"area|extrapolated": "siemens+area (extrapolated)"}
    adherence = ", ".join(f"{names.get(a, a)} {r['accuracy']:.0%} (n = {int(r['n'])})"
                          for a, r in fidelity.iterrows())
    summary.add("sweep", f"guidance 4: FID {row['fid']:.2f} (MammoNet features, 95 % CI "
                f"{row['fid_ci_low']:.2f}–{row['fid_ci_high']:.2f}), KID {row['kid']:.4f} "
                f"(n = {int(row['n_images'])} images); adherence {adherence} — "
                f"{out / 'sweep' / 'sweep.csv'}, {out / 'sweep' / 'tradeoff.png'}")
    step(3)

    syn = out / "synthesized"
    run = synthesize(None, None, "a siemens mammogram in CC view with high density", syn, n=8,
                     steps=STEPS, seed=seed, batch_size=8, pipe=pipe)
    summary.add("synthesize", f"{len(run.rows)} healthy images with an inpainted lesion in "
                f"{syn} (images/, masks/, healthy/)")
    step(4)

    # The demo keeps explain to about a minute on 2 cores: occlusion patches of the default
    # 8 px moved by 8 (not 4) px, and the model-randomisation check on 4 images per group.
    xai = explain(groups={"real": prepared / "lesion", "inpainted": syn}, out=out / "explain",
                  max_images=16, n_boot=500, seed=seed, occlusion_stride=8, sanity_images=4)
    means = xai.tables["summary"].set_index(["group", "method"])
    parts = []
    for group in ("real", "inpainted"):
        r = means.loc[(group, "gradcam")]
        parts.append(f"{group} {r['relevance_mass_mean']:.2f} (lesion score "
                     f"{r['lesion_score_mean']:.2f}, n = {int(r['n_scored'])})")
    summary.add("explain", "Grad-CAM relevance mass in the lesion box: " + "; ".join(parts)
                + f" — {out / 'explain' / 'heatmaps.png'}, comparison.csv")
    step(5)

    study_dir = out / "study"
    if (study_dir / "key.csv").is_file():
        summary.add("study", f"{study_dir} exists (its reader links were printed when it was "
                    "created); serve: mame-eval study serve " + str(study_dir))
    else:
        created = create_study(study_dir, prepared / "healthy", out / "diversity" / "images"
                               / "g4", n=16, readers="alice,bob", seed=seed)
        links = "; ".join(f"{r}: {link}" for r, link in created.reader_links.items())
        summary.add("study", f"{study_dir}: {created.n_real} real + {created.n_synthetic} "
                    f"synthetic blinded cases; links (shown once) {links}; coordinator "
                    f"{created.coordinator_link}; serve: mame-eval study serve {study_dir}")
    step(6)
    summary.wall_time_s = time.perf_counter() - start
    step(7)
    return summary
