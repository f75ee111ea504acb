"""The settings table, the parsers and the sources, and the docs generated from them."""
