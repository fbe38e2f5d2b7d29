"""The ``dsseg`` command line.

Subcommands live in ``dsseg_core/cli/cmd_<name>.py``; each module defines
``register(subparsers: argparse._SubParsersAction) -> None`` and sets a ``func(args) -> int``
default on its parser. Modules are found automatically, so adding a command touches no
shared file. Only this layer prints and chooses exit codes: library code raises
:class:`~dsseg_core.errors.DssegError` subclasses.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from dsseg_core import __version__
from dsseg_core.errors import DssegError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger('dsseg')


def build_parser() -> argparse.ArgumentParser:
    """Parser with every ``cmd_*`` module's subcommand registered."""
    parser = argparse.ArgumentParser(
        prog='dsseg',
        description='Label-free semantic segmentation from camera + LiDAR drives.',
    )
    parser.add_argument('--version', action='version', version=f'dsseg {__version__}')
    parser.add_argument('-v', '--verbose', action='count', default=0,
                        help='more log output (-vv for debug)')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith('cmd_'):
            module = importlib.import_module(f'{__name__}.{info.name}')
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dsseg`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format='%(levelname)s %(name)s: %(message)s')
    if not getattr(args, 'func', None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or EXIT_OK)
    except DssegError as err:
        print(f'dsseg {args.command}: error: {err}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f'dsseg {args.command}: interrupted (rerun to resume where supported)',
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
