"""Generation runs (DESIGN §4): a folder of PNGs plus ``manifest.jsonl``, one line per image.

:func:`run_indexed` is the engine every sampling command shares:

* image ``i`` is rendered from seed ``S + i`` — it can be regenerated alone;
* resumable — an index whose manifest line exists (and whose files are there) is skipped;
* crash-safe — each PNG is written to a temporary file and renamed before its manifest line is
  appended (whole lines, flushed); a line cut short by a kill is ignored, and every run starts
  by rewriting the manifest cleanly (atomically), so it never grows a corrupt middle;
* distributed — under ``accelerate launch`` the missing indices are split across processes with
  :class:`accelerate.PartialState`; each process keeps its own shard manifest
  (``.manifest.rank-K.jsonl``) and the main process merges them into one ``manifest.jsonl``.
  An interrupted distributed run resumes from the shards (with any number of processes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mame_eval.errors import InputError
from mame_eval.io import read_jsonl, write_jsonl

MANIFEST = "manifest.jsonl"
SHARD_GLOB = ".manifest.rank-*.jsonl"


@dataclass
class GenerationRun:
    """The state of a run folder after a sampling call."""

    out: Path
    rows: list[dict]  # every image of the run, by index
    generated: int  # images rendered by this call (all processes)
    skipped: int  # images already present before this call
    wall_time_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    is_main_process: bool = True  # under `accelerate launch`, only the main one reports

    @property
    def manifest(self) -> Path:
        return self.out / MANIFEST

    @property
    def files(self) -> list[Path]:
        return [self.out / row["file"] for row in self.rows]


def process_state():
    """The :class:`accelerate.PartialState` of this process (one process when not launched)."""
    from accelerate import PartialState

    from mame_eval.models.loading import use_cpu_processes

    return PartialState(cpu=use_cpu_processes())


def _files_exist(out: Path, row: dict) -> bool:
    keys = [k for k in row if k == "file" or k.endswith("_file")]
    return bool(keys) and all((out / row[k]).is_file() for k in keys)


def read_manifest(out: Path) -> dict[int, dict]:
    """Finished images of a run folder by index: ``manifest.jsonl`` plus any shards left by an
    interrupted distributed run; lines whose files are missing are dropped."""
    out = Path(out)
    rows: dict[int, dict] = {}
    sources = [out / MANIFEST, *sorted(out.glob(SHARD_GLOB))]
    for path in sources:
        if path.is_file():
            for row in read_jsonl(path):
                if isinstance(row.get("index"), int) and _files_exist(out, row):
                    rows[row["index"]] = row
    return rows


def check_compatible(out: Path, existing: dict[int, dict], fixed: dict) -> None:
    """An existing run must have been made with the same settings (else a new ``--out``).

    Asking for fewer images than the run holds is fine: nothing is deleted.
    """
    for row in existing.values():
        for key, value in fixed.items():
            if key in row and row[key] != value:
                raise InputError(
                    f"{out} already holds a run with {key} = {row[key]!r}, not {value!r}; "
                    "use a new --out folder, or the same settings to resume it")


def _append(path: Path, rows: list[dict]) -> None:
    """Append complete lines and flush them to disk; a kill can only truncate the last one,
    which :func:`read_manifest` ignores and the next run rewrites away."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(row, default=str) + "\n" for row in rows))
        fh.flush()
        os.fsync(fh.fileno())


def _consolidate(out: Path, rows: dict[int, dict]) -> None:
    """Rewrite ``manifest.jsonl`` atomically with ``rows`` by index; remove the shards."""
    write_jsonl(out / MANIFEST, [rows[i] for i in sorted(rows)])
    for path in out.glob(SHARD_GLOB):
        path.unlink()


def run_indexed(out: Path, n: int, batch_size: int, fixed: dict,
                render: Callable[[list[int]], list[dict]],
                progress: Callable[[int, int], None] | None = None) -> GenerationRun:
    """Render the missing indices ``0 … n-1`` of the run in ``out``.

    ``render(indices)`` renders and saves one batch and returns one manifest row per index
    (each with ``index`` and ``file``; more ``*_file`` keys for extra outputs). ``fixed`` holds
    the settings that must match an existing run and are written into every row.
    ``progress(done, n)`` is called on the main process after each batch.
    """
    start = time.perf_counter()
    out = Path(out)
    if n < 1:
        raise InputError(f"--n {n}: expected at least 1 image")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: expected at least 1")
    state = process_state()
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    existing = read_manifest(out)
    check_compatible(out, existing, fixed)  # every process raises alike: nobody waits forever
    state.wait_for_everyone()
    if state.is_main_process:
        # One clean manifest to append to: merges the shards of an interrupted distributed
        # run and drops a line truncated by a kill.
        _consolidate(out, existing)
    state.wait_for_everyone()
    todo = [i for i in range(n) if i not in existing]
    if progress and state.is_main_process:
        progress(n - len(todo), n)

    # Each process appends whole lines to its own file (the manifest itself when alone).
    target = out / (MANIFEST if state.num_processes == 1
                    else f".manifest.rank-{state.process_index}.jsonl")
    done_here = 0
    with state.split_between_processes(todo) as mine:
        for b in range(0, len(mine), batch_size):
            indices = list(mine[b:b + batch_size])
            rows = [{**row, "process": state.process_index, **fixed} for row in render(indices)]
            _append(target, rows)
            done_here += len(rows)
            if progress and state.is_main_process:
                # Other processes advance at the same pace: estimate their share.
                progress(min(n, n - len(todo) + done_here * state.num_processes), n)

    state.wait_for_everyone()
    if state.is_main_process:
        _consolidate(out, read_manifest(out))
        if progress:
            progress(n, n)
    state.wait_for_everyone()
    rows = read_manifest(out)
    return GenerationRun(out=out, rows=[rows[i] for i in sorted(rows)],
                         generated=len(todo), skipped=n - len(todo),
                         wall_time_s=round(time.perf_counter() - start, 3),
                         is_main_process=state.is_main_process)
