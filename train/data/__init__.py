"""Dataset adapters: real and synthetic surgical datasets into one sample record."""
