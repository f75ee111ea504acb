"""Optional parts beside the master's loop, each seeing the master through a small port."""
