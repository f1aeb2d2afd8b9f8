"""Old import path, kept for plugin packages made by earlier ``memorybench new-method``:
the code lives in :mod:`memorybench.run.validate`."""

from memorybench.run.validate import ValidationReport, validate_method

__all__ = ["ValidationReport", "validate_method"]
