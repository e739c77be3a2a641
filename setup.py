"""The optional C part of the sampler: its steady-state tick (tracer/_fasttick.c).

Everything else is in pyproject.toml.  ``optional=True``: without a C
compiler the install still succeeds and circuit samples in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "circuit.tracer._fasttick",
            ["tracer/_fasttick.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
