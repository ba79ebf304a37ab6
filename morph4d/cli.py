"""The ``morph4d`` command line: the command groups of every stage, assembled. ``--help`` lists only commands
that work.

Each stage's ``cli`` module registers its own commands (``register(subparsers)``); this module only puts
them in order. Errors follow ``morph4d.errors``: bad input prints ``error: ...`` and exits 2, an
operating-system failure exits 1, a bug prints ``internal error: ...`` with the path of its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from morph4d.avatar import cli as avatar_cli
from morph4d.conditioning import cli as conditioning_cli
from morph4d.data import cli as data_cli
from morph4d.errors import run_command
from morph4d.eval import cli as eval_cli
from morph4d.generation import cli as generation_cli
from morph4d.heads import cli as heads_cli
from morph4d.models import cli as models_cli
from morph4d.pipeline import cli as pipeline_cli
from morph4d.portrait import cli as portrait_cli
from morph4d.tracking import cli as tracking_cli
from morph4d.training import cli as training_cli

# the order of ``morph4d --help``: the whole pipeline first, then the stages in data-flow order
COMMAND_GROUPS = (pipeline_cli, tracking_cli, generation_cli, avatar_cli, eval_cli, conditioning_cli, models_cli,
                  training_cli, portrait_cli, data_cli, heads_cli)


def _leaf_parsers(parser: argparse.ArgumentParser, name: str = ""):
    """``(command name, parser)`` of every command that runs (``"model init"``, ``"demo"``, ...)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for action in subs:
        for sub_name, sub in action.choices.items():
            yield from _leaf_parsers(sub, f"{name} {sub_name}".strip())


def _thread_count(text: str) -> int:
    most = 4 * (os.cpu_count() or 1)
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {most} (4x this machine's cores), "
                                         f"got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="morph4d", description="One portrait photo -> animatable 4D head "
                                     "avatar (MVP4D, IM-Portrait).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    # one thread setting for every command (morph4d/threads.py decides torch's, numba's and OpenMP's from it);
    # the default (the core count, at most 8) is what measured fastest here
    for _, leaf in _leaf_parsers(parser):
        leaf.add_argument("--threads", type=_thread_count, default=None, metavar="N",
                          help="threads of torch, numba and OpenMP (default: this machine's cores, at most 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``morph4d ARGV``; returns the exit status (argparse's usage errors: 2, ``--help``: 0)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    command = args.func

    def configured(a):   # threads decided before any of the command's work (and inside the error contract)
        from morph4d.threads import DEFAULT_THREADS, configure_threads
        configure_threads(DEFAULT_THREADS if a.threads is None else a.threads)
        command(a)

    args.func = configured
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
