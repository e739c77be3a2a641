"""The optional C part of the sampler: the /proc backend's steady-state tick
(tracer/backends/_fasttick.c).

Everything else is in pyproject.toml.  ``optional=True``: without a C
compiler the install still succeeds and circuit samples in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "circuit.tracer.backends._fasttick",
            ["tracer/backends/_fasttick.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
