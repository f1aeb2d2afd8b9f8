"""Built-in mitigation methods, one module each (registered lazily by memorybench.builtins)."""
