"""``python -m pigbench COMMAND ...`` is ``pigbench COMMAND ...``, for an environment whose console
scripts are not on PATH; ``python -m pigbench.run`` and the other subcommand modules work too."""

import sys

from pigbench.cli import main

sys.exit(main())
