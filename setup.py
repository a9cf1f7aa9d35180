"""Package list for setuptools (all other metadata is in pyproject.toml).

pyproject.toml maps the data folders boards/, rtl_templates/ and sim/ into the package
([tool.setuptools.package-dir]). Its package discovery finds only the folders under hwgen/ and cannot be
combined with named packages there, so the list is made here: every hwgen.* package found, plus the mapped
ones.
"""

import tomllib

from setuptools import find_packages, setup

with open("pyproject.toml", "rb") as f:
    MAPPED = sorted(tomllib.load(f)["tool"]["setuptools"]["package-dir"])

setup(packages=find_packages(include=["hwgen", "hwgen.*"]) + MAPPED)
