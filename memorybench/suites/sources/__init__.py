"""Built-in data sources, one module each (registered by name in ``DATA_SOURCES``)."""
