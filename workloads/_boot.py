"""Run a circuit.workloads module under an interpreter circuit is not installed in.

``PYTHON _boot.py CIRCUIT_DIR:WORKLOADS_DIR MODULE ARGS...`` registers the
``circuit`` package and ``circuit.workloads`` from their source folders (both
need only the standard library), then runs MODULE as ``__main__``.
Used by ``--python``; children started by the workload boot the same way.
"""

import os
import sys

# Old interpreters must get a clear message, hence no f-strings or 3.10 syntax here.
if sys.version_info < (3, 10):  # noqa: UP036
    sys.stderr.write(
        "python -m circuit.workloads: error: --python needs Python 3.10 or newer, %s is %d.%d\n"  # noqa: UP031
        % (sys.executable, sys.version_info[0], sys.version_info[1])
    )
    sys.exit(2)

import importlib.util
import runpy


def _package(name: str, folder: str) -> None:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)


def main() -> None:
    paths, module, *args = sys.argv[1:]
    circuit_dir, workloads_dir = paths.split(os.pathsep)
    os.environ["CIRCUIT_WORKLOADS_BOOT"] = paths
    _package("circuit", circuit_dir)
    _package("circuit.workloads", workloads_dir)
    sys.modules["circuit"].workloads = sys.modules["circuit.workloads"]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


main()
