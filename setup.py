"""The optional C speed-up of the hot path (everything else is in pyproject.toml).

``trio_ingest/_speedups.c`` rebuilds the events a sink asks for in one C loop. It is
built when a C compiler is present; without one (``optional=True``) the install goes on
and the pure-Python code runs, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("trio_ingest._speedups", ["trio_ingest/_speedups.c"], optional=True),
    ]
)
