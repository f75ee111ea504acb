"""An app whose import takes 2 s: a worker forked from the zygote must not pay it again."""

import time

time.sleep(2)

from hello import app  # noqa: E402, F401
