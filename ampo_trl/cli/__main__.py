"""``python -m ampo_trl.cli <command> ...`` (and ``accelerate launch -m ampo_trl.cli <command> ...``): the ``ampo``
command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
