"""``python -m i2p.cli``: the same as the ``i2p`` console script."""

import sys

from i2p.cli.main import main

sys.exit(main())
