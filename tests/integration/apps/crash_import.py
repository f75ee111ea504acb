raise RuntimeError("the database URL is not set")
