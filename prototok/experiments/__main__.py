"""`python -m prototok.experiments NAME [flags]`: the same as `prototok experiment NAME [flags]`."""

import sys

from ..cli import app

app(["experiment", *sys.argv[1:]], prog_name="python -m prototok.experiments")
