"""Old import path, kept for published plugins: the code lives in :mod:`memorybench.core.config`."""

from memorybench.core.config import (
    ConfiguredPlugin,
    NoConfig,
    canonical_json,
    config_from_dict,
    config_sha256,
    config_to_dict,
    parse_set_options,
    sha256_json,
)

__all__ = ["ConfiguredPlugin", "NoConfig", "canonical_json", "config_from_dict", "config_sha256", "config_to_dict", "parse_set_options", "sha256_json"]
