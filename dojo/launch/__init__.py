"""The `dojo` command and its omegaconf configs: the one place that wires everything together."""
