"""Networks, one per file, each with a frozen dataclass config."""
