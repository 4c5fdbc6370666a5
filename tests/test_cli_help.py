"""`mame-eval ... --help` for every command: it works, and it names and explains every option."""

import pytest
import typer
from typer.testing import CliRunner

from mame_eval.cli import app


def _commands(group, path: tuple[str, ...] = ()):
    # typer vendors its own click, so groups and options are recognised by what they have
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_command_tree_is_complete():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"phantoms", "prepare", "generate", "inpaint", "synthesize", "diversity", "fid",
            "sweep", "explain", "mrmc", "demo", "models list", "train healthy",
            "train inpaint", "train vae", "train cad", "study create", "study serve",
            "study status", "study export", "study import-ratings", "study analyze"} <= names


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_names_and_explains_every_option(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: mame-eval {' '.join(path)}")
    assert command.help, f"{' '.join(path)} has no description"
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert param.opts[0] in result.output
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
