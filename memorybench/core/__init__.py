"""Utilities every layer uses: typed configs and hashing, atomic files and strict JSON, provenance."""
