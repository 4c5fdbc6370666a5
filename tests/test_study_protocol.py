"""Reader-study protocol: the shipped TOML, validation (unknown key = error), TOML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from mame_eval.errors import ConfigError
from mame_eval.studies.protocol import (  # tomllib: tomli on Python 3.10
    default_protocol,
    dumps_toml,
    load_protocol,
    protocol_from_dict,
    tomllib,
)

ROOT = Path(__file__).resolve().parents[1]
TURING = ROOT / "studies" / "turing-0-4.toml"


def test_shipped_protocol_is_the_papers_scale_and_equals_the_builtin_default():
    p = load_protocol(TURING)
    assert p == default_protocol()
    assert [(s.value, s.label) for s in p.scale] == [
        (0, "Definitely synthetic"), (1, "Probably synthetic"), (2, "Unsure"),
        (3, "Probably real"), (4, "Definitely real")]
    assert p.effective_cutoff == 2.5
    assert p.allow_back is False and p.time_limit_s is None
    assert "{n_cases}" in p.instructions and "53" in p.render_instructions(53)
    assert [p.key_for(v) for v in p.values] == ["0", "1", "2", "3", "4"]


def _base() -> dict:
    return default_protocol().to_dict()


@pytest.mark.parametrize("patch, expected", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"scale": [{"value": 0, "label": "a", "key": "x"}, {"value": 1, "label": "b"}]},
     "unknown key 'scale.0.key'"),
    ({"scale": [{"value": 1, "label": "a"}, {"value": 0, "label": "b"}]},
     "strictly increasing"),
    ({"scale": [{"value": 0, "label": "a"}, {"value": 1, "label": "a"}]}, "distinct"),
    ({"scale": [{"value": 0, "label": "only"}]}, "scale"),
    ({"cutoff": 4}, "cutoff"),
    ({"time_limit_s": 0}, "time_limit_s"),
    ({"allow_back": "maybe"}, "allow_back"),
])
def test_bad_protocols_fail_with_one_line_naming_the_field(patch, expected):
    with pytest.raises(ConfigError) as err:
        protocol_from_dict({**_base(), **patch}, source="p.toml")
    msg = str(err.value)
    assert expected in msg and msg.startswith("p.toml") and "\n" not in msg


def test_missing_instructions_and_bad_toml_files(tmp_path):
    data = _base()
    del data["instructions"]
    with pytest.raises(ConfigError, match="instructions"):
        protocol_from_dict(data)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_protocol(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_protocol(tmp_path / "absent.toml")


def test_toml_writer_round_trips_protocol_and_settings():
    proto = default_protocol().model_copy(update={"time_limit_s": 30.0, "allow_back": True})
    data = {"study": {"name": "s \"quoted\" \\ x", "seed": 3, "ratio": 0.5,
                      "readers": ["alice", "bob"], "flag": False},
            "protocol": proto.to_dict()}
    text = dumps_toml(data)
    back = tomllib.loads(text)
    assert back["study"] == data["study"]
    assert protocol_from_dict(back["protocol"]) == proto
