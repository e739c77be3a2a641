"""The optional C parts of the sampler: the /proc backend's steady-state tick
(tracer/backends/_fasttick.c) and the socket lookup (tracer/_sockpeek.c).

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
        ),
        Extension(
            "circuit.tracer._sockpeek",
            ["tracer/_sockpeek.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
