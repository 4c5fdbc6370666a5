"""Library errors name the parameter; the CLI says the flag the user typed, in one line."""

import subprocess
import sys

import pytest

from mame_eval.cli import flag_message
from mame_eval.errors import InputError


@pytest.mark.parametrize("param, message, shown", [
    ("guidance_scale", "guidance_scale -1: expected >= 0", "--guidance -1: expected >= 0"),
    ("batch_size", "batch_size 0: expected at least 1", "--batch-size 0: expected at least 1"),
    (None, "guidance_scale -1: expected >= 0", "guidance_scale -1: expected >= 0"),
    ("crop", "a message not starting with the name", "a message not starting with the name"),
])
def test_flag_message(param, message, shown):
    assert flag_message(InputError(message, param=param)) == shown


def test_cli_names_the_flag(tmp_path):
    (tmp_path / "raw").mkdir()
    proc = subprocess.run([sys.executable, "-m", "mame_eval", "prepare", str(tmp_path / "raw"),
                           str(tmp_path / "out"), "--crop", "zoom"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --crop 'zoom': expected one of center, pad"]
    assert not (tmp_path / "out").exists()


def test_errors_chain_their_cause(tmp_path):
    from mame_eval.journeys.mrmc import mrmc_run

    bad = tmp_path / "r.csv"
    bad.write_text("reader,case\n1,2\n")
    with pytest.raises(InputError) as err:
        mrmc_run(bad)
    assert err.value.__cause__ is not None


@pytest.mark.parametrize("args, shown", [
    (["--steps", "0"], "error: --steps 0: expected at least 1"),
    (["--guidance", "-1"], "error: --guidance -1.0: expected ≥ 0"),
    (["--scheduler", "warp"], "error: --scheduler 'warp': expected one of"),
])
def test_generate_names_the_flag_the_user_typed(tmp_path, args, shown):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mame_eval", "generate", "--out", str(out),
                           "--prompt", "a siemens mammogram in CC view with low density",
                           "--n", "1", *args], capture_output=True, text=True,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(shown)
    assert not list(out.glob("*.png"))
