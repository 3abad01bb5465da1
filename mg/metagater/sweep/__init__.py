"""MetaGater's batched sweeps: its sweep family, the vmapped program, the runner, the bench."""
