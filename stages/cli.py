"""Entry-point plumbing: user errors end in one clear line on stderr, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad param, bad file, bad archive); shown without a traceback."""


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main`` and turn ``UserError`` and Ctrl-C into a message and an exit code."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        sys.exit(130)
