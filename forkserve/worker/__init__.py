"""A worker process: serves the app on uvicorn's server, ticks its scoreboard slot."""
