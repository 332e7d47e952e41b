"""Package set-up: metadata and requirements are read from ``settings.ini``, the version from
``inferno/_version.py`` (its one definition)."""
import re
from configparser import ConfigParser
from pathlib import Path

import setuptools
from setuptools import find_packages, setup

here = Path(__file__).parent
cfg = ConfigParser(delimiters=["="])
cfg.read(here / "settings.ini")
c = cfg["DEFAULT"]

statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable"]
# an SPDX license expression: the metadata form (License-Expression, PEP 639) that replaced
# the deprecated ``License ::`` classifiers, which make setuptools >= 77 warn on every install;
# older setuptools know only the free-text ``license`` field
lic = c["license"]
lic_field = "license_expression" if int(setuptools.__version__.split(".")[0]) >= 77 else "license"
readme = here / "README.md"
version = re.search(r'__version__ = "([^"]+)"', (here / "inferno" / "_version.py").read_text()).group(1)

setup(
    name=c["lib_name"],
    version=version,
    description=c["description"],
    long_description=readme.read_text() if readme.exists() else "",
    long_description_content_type="text/markdown",
    author=c["author"],
    author_email=c["author_email"],
    **{lic_field: lic},
    keywords=c["keywords"].split(),
    classifiers=[
        f"Development Status :: {statuses[int(c['status']) - 1]}",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Physics",
        "Programming Language :: Python :: 3",
    ],
    python_requires=f">={c['min_python']}",
    packages=find_packages(include=["inferno", "inferno.*"]),
    install_requires=c["requirements"].split(),
    extras_require={
        "test": c["test_requirements"].split(),
        "pyhf": c["pyhf_requirements"].split(),
        "hs3": c["hs3_requirements"].split(),
        "root": c["root_requirements"].split(),
        "parquet": c["parquet_requirements"].split(),
        "hist": c["hist_requirements"].split(),
        "onnx": c["onnx_requirements"].split(),
        "distributed": c["distributed_requirements"].split(),
        "docs": c["docs_requirements"].split(),
    },
    entry_points={"console_scripts": c["console_scripts"].split()},
    include_package_data=True,
    zip_safe=False,
)
