"""The ``forkserve`` command line and ``forkserve ctl``."""
