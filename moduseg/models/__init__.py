"""The embedded default models: where they come from, where they live."""
