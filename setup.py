from setuptools import find_packages, setup

import re
from pathlib import Path

VERSION = re.search(r'__version__ = "([^"]+)"', Path("castwall/__init__.py").read_text()).group(1)

setup(
    name="castwall",
    version=VERSION,
    description="Let Chromecasts and other Cast devices through ufw, with narrow rules per device",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["castwall", "castwall.*"]),
    # Floors at or below Debian 12's versions, no caps: one codebase for the .deb and pip.
    # castwall reads Cast announcements itself (castwall/announcement.py) and
    # needs no pychromecast; raw ARP uses a packet socket (castwall/system/arp.py).
    # pychromecast is optional: only `check --app` speaks the Cast protocol.
    install_requires=[
        "click>=8.1.3",
        "zeroconf>=0.47.3",
    ],
    extras_require={"check-app": ["pychromecast>=9.4"]},
    entry_points={"console_scripts": ["castwall = castwall.cli:main"]},
    classifiers=[
        "Environment :: Console",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Networking :: Firewalls",
    ],
)
