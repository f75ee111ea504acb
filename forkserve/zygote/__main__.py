"""``python -m forkserve.zygote``: how the master execs a zygote (its spec in the environment).

The package's ``__init__`` imports nothing, so running it with ``-m`` loads only the zygote's side.
"""

import sys

from forkserve.zygote.zygote import main

sys.exit(main())
