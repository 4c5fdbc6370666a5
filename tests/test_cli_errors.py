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
