"""Modules every kind of process uses: the scoreboard, the zygote's channel, logs, sockets, hooks."""
