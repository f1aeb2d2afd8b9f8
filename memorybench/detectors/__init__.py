"""Built-in memorization detectors, one file each (registered lazily in memorybench.builtins)."""
