"""The HTTP protocols a worker runs, and the middleware around the app."""
