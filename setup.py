"""Package discovery (everything else is in pyproject.toml).

memorybench/ and every subpackage under it are found automatically, as are the packages
under methods/ and datasets/, which install as memorybench.methods and memorybench.datasets
(pyproject.toml maps those folders; `packages.find` alone cannot rename them).
"""

from setuptools import find_packages, setup

MAPPED = {"memorybench.methods": "methods", "memorybench.datasets": "datasets"}

packages = find_packages(include=["memorybench", "memorybench.*"])
for name, folder in MAPPED.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages)
