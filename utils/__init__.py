"""Generic machinery: checkpointing, distributed helpers, metrics, logging."""
