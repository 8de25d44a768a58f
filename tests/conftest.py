"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default: fast enough for every run) and
``thorough`` (many more examples, for soak runs). Select with the environment
variable ``CRDTSYNC_HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

for name, examples, steps in (("ci", 60, 40), ("thorough", 1000, 100)):
    settings.register_profile(
        name,
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )
settings.load_profile(os.environ.get("CRDTSYNC_HYPOTHESIS_PROFILE", "ci"))
