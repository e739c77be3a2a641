"""circuit's tests.

unit/         pure logic: fakes, canned /proc text, synthetic frames; fast
integration/  real processes: traced targets, py-spy, servers on loopback
              (marked ``integration``; ``pytest -m "not integration"`` skips them)
support/      helpers the tests import (``from tests.support.helpers import ...``)
targets/      scripts the integration tests run under the tracer
"""
