"""`mame-eval mrmc` as a user runs it: JSON shape, published numbers, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

VANDYKE = Path(__file__).parent / "data" / "vandyke.csv"


def run(*args):
    return subprocess.run([sys.executable, "-m", "mame_eval", "mrmc", *args],
                          capture_output=True, text=True, timeout=120)


def test_json_output_reproduces_van_dyke():
    res = run(str(VANDYKE), "--modality", "treatment", "--score", "rating", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) == {"covariance", "modalities", "comparison", "fixed_readers",
                        "fixed_cases", "variance_components"}
    assert out["modalities"]["1"]["auc"] == pytest.approx(0.89703704, abs=5e-9)
    assert out["comparison"]["F"] == pytest.approx(4.456, abs=5e-4)
    assert out["comparison"]["ddf"] == pytest.approx(15.26, abs=5e-3)
    diff = out["comparison"]["differences"][0]
    assert (diff["a"], diff["b"]) == ("1", "2")
    assert diff["ci"] == pytest.approx([-0.08796, 0.00036], abs=5e-6)
    assert out["fixed_readers"]["df"] == 1


def test_delong_and_table():
    res = run(str(VANDYKE), "--modality", "treatment", "--score", "rating",
              "--covariance", "delong", "--json")
    assert json.loads(res.stdout)["comparison"]["p"] == pytest.approx(0.05123, abs=5e-6)
    table = run(str(VANDYKE), "--modality", "treatment", "--score", "rating").stdout
    assert "0.8970" in table and "15.26" in table


@pytest.mark.parametrize("args, fragment", [
    (["--score", "nope"], "score column 'nope' not found"),
    (["--covariance", "bootstrap"], "bootstrap"),
])
def test_bad_input_is_one_line(args, fragment):
    res = run(str(VANDYKE), "--modality", "treatment", "--score", "rating", *args)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


def test_missing_file(tmp_path):
    res = run(str(tmp_path / "none.csv"))
    assert res.returncode == 1 and "file not found" in res.stderr


def test_degenerate_results_say_why_on_stderr_and_keep_the_json_shape(tmp_path):
    """All scores equal: AUC 0.5 everywhere, tests undefined — said, never silently null."""
    rows = ["reader,modality,case,truth,score"]
    for reader in ("r1", "r2"):
        for modality in ("a", "b"):
            rows += [f"{reader},{modality},c{k},{k % 2},3" for k in range(10)]
    path = tmp_path / "flat.csv"
    path.write_text("\n".join(rows) + "\n")
    res = run(str(path), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)  # stdout is only the JSON
    assert out["modalities"]["a"]["auc"] == 0.5 and out["comparison"] is None
    notes = [line for line in res.stderr.splitlines() if line.startswith("note: ")]
    assert any("random-reader test undefined" in n for n in notes)
    assert any("modality a" in n and "zero standard error" in n for n in notes)
    one = tmp_path / "one.csv"
    one.write_text("\n".join(r for r in rows if ",b," not in r) + "\n")
    res = run(str(one))
    assert res.returncode == 0 and "zero standard error" in res.stderr
