"""Argument helpers shared by every command group's ``register`` (foundation: argparse only).

Flag spellings mean one thing across all commands: ``--res`` a square size in pixels, ``--views`` a number
of views, ``--view-set`` a view set (small | 120 | 360), ``--plan`` a sampling-plan preset
(small | 120 | 360), ``--head`` / ``--flame-path`` the head model. Old spellings stay accepted through
``deprecated_alias`` and say what to write instead.
"""

from __future__ import annotations

import argparse
import sys


class _Deprecated(argparse.Action):
    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    """Accept ``old`` as a hidden spelling of ``new`` (same ``dest``, ``type``, ``choices``), with a warning."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


__all__ = ["deprecated_alias"]
