"""Built-in metric plugins: adapters from a finished run (``RunView``) to the pure metric
functions in ``memorybench.metrics``."""
