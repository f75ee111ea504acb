"""``python -m forkserve._zygote_entry``: how the master execs a zygote (its spec in the environment).

A module of its own because ``forkserve/__init__`` imports ``forkserve.zygote``, and running an
already-imported module with ``-m`` makes runpy warn.
"""

import sys

from forkserve.zygote import main

sys.exit(main())
