"""The ``evoprog`` command and ``python -m evoprog``.

The CLI's imports (torch, Ray) take seconds; Ctrl-C meanwhile ends the command as it
ends any interrupted command, with one line and exit code 130, not a traceback.
"""

import os
import sys


def main() -> None:
    try:
        from evoprog.search.cli import main as run_cli
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr, flush=True)
        # Nothing has started yet; exit at once, before half-imported modules' exit
        # hooks run (one of them can die of the same Ctrl-C).
        os._exit(130)
    run_cli()


if __name__ == "__main__":
    main()
