"""The package list, found rather than kept by hand (pyproject.toml says the rest).

models/ and targets/ stay at the top of the repository and are installed as neurocompile.models
and neurocompile.targets; every sub-package under each of the three roots is found by setuptools,
so a new one (targets/loihi2/processes, ...) cannot be left out of the wheel."""
from setuptools import find_packages, setup

ROOTS = {"neurocompile": "neurocompile", "neurocompile.models": "models", "neurocompile.targets": "targets"}

packages = [name + sub for name, folder in ROOTS.items() for sub in [""] + ["." + p for p in find_packages(folder)]]
setup(packages=packages, package_dir=ROOTS)
