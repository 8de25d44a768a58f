"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default: fast enough for every run) and
``thorough`` (many more examples, for soak runs). Select with the environment
variable ``CRDTSYNC_HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("CRDTSYNC_HYPOTHESIS_PROFILE", "ci"))
