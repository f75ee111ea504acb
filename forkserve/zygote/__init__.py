"""The zygote process: imports the app once per generation, then forks workers."""
