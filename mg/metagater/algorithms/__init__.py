"""MetaGater, FedAvg and Per-FedAvg as pure function sets (``mg.federated.Algorithm``)."""
