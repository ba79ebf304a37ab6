"""The error contract (morph4d/errors.py) and the flag spellings shared by every command (morph4d/cliargs.py)."""

import argparse
import tempfile

import pytest

from morph4d.cli import build_parser, main
from morph4d.errors import Morph4DError, run_command


def _run(func):
    return run_command(argparse.Namespace(func=func))


def test_user_errors_exit_2_with_one_line(capsys):
    def bad_input(args):
        raise Morph4DError("--frames must be >= 1, got 0")
    assert _run(bad_input) == 2
    assert capsys.readouterr().err == "error: --frames must be >= 1, got 0\n"


def test_a_bug_is_an_internal_error_with_its_traceback_in_a_file(capsys, tmp_path, monkeypatch):
    """A ValueError raised by a library (not a Morph4DError) is a bug, never shown as bad input."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def buggy(args):
        import numpy as np
        np.zeros(3).reshape(2, 2)   # ValueError from numpy
    assert _run(buggy) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: ValueError: cannot reshape") and "Traceback" not in err
    (trace,) = tmp_path.glob("morph4d-traceback-*.txt")
    assert str(trace) in err
    text = trace.read_text()
    assert "Traceback" in text and "in buggy" in text and "reshape" in text


def test_os_failures_exit_1_and_missing_files_exit_2(capsys):
    def unwritable(args):
        raise PermissionError(13, "Permission denied", "/root/out")
    def missing(args):
        open("/nonexistent/reference.npz")
    assert _run(unwritable) == 1 and capsys.readouterr().err.startswith("error: [Errno 13]")
    assert _run(missing) == 2 and capsys.readouterr().err.startswith("error: [Errno 2]")


def test_usage_errors_and_help_return_their_status(capsys):
    assert main(["--help"]) == 0
    assert main(["generate", "--reference", "r.npz", "--plan", "720"]) == 2
    assert "invalid choice: '720'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, dest, value, old, new", [
    (["demo", "--resolution", "32"], "res", 32, "--resolution", "--res"),
    (["conditioning", "--views", "360"], "view_set", "360", "--views", "--view-set"),
    (["generate", "--reference", "r.npz", "--views", "120"], "plan", "120", "--views", "--plan"),
    (["avatar", "--reference", "r.npz", "--out", "o", "--views", "360"], "plan", "360", "--views", "--plan"),
])
def test_old_spellings_still_work_and_say_the_new_one(argv, dest, value, old, new, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err == f"warning: {old} is deprecated; use {new}\n"
    new_argv = [new if a == old else a for a in argv]
    assert getattr(build_parser().parse_args(new_argv), dest) == value and capsys.readouterr().err == ""


def test_closed_sets_are_choices_with_one_meaning_per_flag():
    """--views is a count (data synth), --view-set a view set, --plan a plan preset, --res a size."""
    sub = build_parser()._subparsers._group_actions[0].choices
    options = {name: {o: a for a in p._actions for o in a.option_strings} for name, p in sub.items()}
    assert set(options["generate"]["--plan"].choices) == set(options["avatar"]["--plan"].choices) == {"small", "120",
                                                                                                      "360"}
    assert set(options["conditioning"]["--view-set"].choices) == {"small", "120", "360"}
    assert options["generate"]["--guidance"].choices == ("multiview", "cfg", "none")
    for name, opts in options.items():
        assert "--resolution" not in opts or opts["--resolution"].help == argparse.SUPPRESS, name
        for flag in ("--head",):
            if flag in opts:
                assert opts[flag].choices == ("builtin", "flame"), name
    data = build_parser().parse_args(["data", "synth", "--out", "x", "--views", "3"])
    assert data.views == 3
