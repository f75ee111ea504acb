"""The master process: its loop, startup, worker registry, generations and zygote handles, USR2."""
