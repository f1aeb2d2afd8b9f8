"""Analyses that go with methods and detectors (e.g. the overlap of Wanda masks found from
different prompt subsets), run by ``memorybench analyze``."""
