"""Suites: the versioned spec (and its YAML files here), the typed data a suite hands the
runner, the fine-tune recipe, and the built-in data sources (``sources/``)."""
