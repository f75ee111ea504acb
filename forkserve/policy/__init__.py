"""Pure decisions: plain functions and small classes over plain data and ``now``; no I/O."""
