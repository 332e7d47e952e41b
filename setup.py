"""Package set-up: metadata and requirements are read from ``settings.ini``."""
from configparser import ConfigParser
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
cfg = ConfigParser(delimiters=["="])
cfg.read(here / "settings.ini")
c = cfg["DEFAULT"]

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable"]
lic = licenses[c["license"]]
readme = here / "README.md"

setup(
    name=c["lib_name"],
    version=c["version"],
    description=c["description"],
    long_description=readme.read_text() if readme.exists() else "",
    long_description_content_type="text/markdown",
    author=c["author"],
    author_email=c["author_email"],
    license=lic[0],
    keywords=c["keywords"].split(),
    classifiers=[
        f"Development Status :: {statuses[int(c['status']) - 1]}",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Physics",
        f"License :: {lic[1]}",
        "Programming Language :: Python :: 3",
    ],
    python_requires=f">={c['min_python']}",
    packages=find_packages(include=["inferno", "inferno.*"]),
    install_requires=c["requirements"].split(),
    extras_require={
        "test": c["test_requirements"].split(),
        "pyhf": c["pyhf_requirements"].split(),
    },
    entry_points={"console_scripts": c["console_scripts"].split()},
    include_package_data=True,
    zip_safe=False,
)
