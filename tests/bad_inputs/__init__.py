"""Bad-input corpus: every wrong config, producer call, reference file and CLI use we know of.

Each case asserts the exact user-facing message and exit code. Data files live
in ``cases/``: ``config/NAME.yaml`` with ``NAME.expected`` (the error lines,
``{file}`` standing for the path given on the command line), and
``reference/NAME.*`` with ``NAME.expected`` in the same form.
"""

from pathlib import Path

CASES = Path(__file__).resolve().parent / "cases"
