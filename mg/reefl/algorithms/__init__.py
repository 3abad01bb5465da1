"""ReeFL and its baselines as clients and servers of one round each."""
