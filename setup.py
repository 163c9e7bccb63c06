"""
Packaging for txraft, a Raft-replicated key-value store on Twisted.

The twistd plugin ships as the single module C{twisted/plugins/txraft_plugin.py}.
Neither C{twisted/} nor C{twisted/plugins/} has an C{__init__.py} (that would shadow
Twisted itself), so C{twisted.plugins} is listed as a package by name: setuptools then
installs just our module into Twisted's own C{twisted/plugins/} directory.
"""

from setuptools import setup

setup(
    name="txraft",
    version="0.1.0",
    description="A Raft-replicated key-value store on Twisted",
    python_requires=">=3.10",
    packages=["txraft", "txraft.testing", "twisted.plugins"],
    # The web view's page (HTML, CSS, JavaScript) is served from the package.
    package_data={"txraft": ["static/*.html", "static/*.css", "static/*.js"]},
    install_requires=["Twisted[tls]>=23.8", "attrs", "prometheus_client>=0.17"],
    extras_require={
        "test": ["pytest", "pytest-twisted", "ruff", "hypothesis", "mutmut>=3.8,<4"],
        # bench/compare.py runs PySyncObj beside txraft; nothing else imports it.
        "bench": ["pysyncobj"],
    },
    entry_points={
        "console_scripts": [
            "txraft-client = txraft.client:main",
            "txraft-cluster = txraft.launcher:main",
            "txraft-keygen = txraft.keygen:main",
            "txraft-restore = txraft.restore:main",
        ],
    },
)
