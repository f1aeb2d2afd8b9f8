"""Orchestration: the run request, the runner and its generation cache, suite fine-tunes,
cost against ``none``, method validation and detection runs."""
