"""pytest plugin for mutation runs (scripts/mutation.py; loaded with ``-p scripts.mutation_plugin``).

Registers the Hypothesis profile ``mutation``: derandomized like the default ``ci`` profile (a mutant is judged
on the same examples every time) with fewer examples, so the property tests stay under a second each per mutant.
``--hypothesis-profile=mutation`` selects it after tests/conftest.py has loaded ``ci``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "mutation",
    derandomize=True,
    max_examples=10,
    deadline=None,  # mutmut's trampolines slow every call of a mutated module
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=False,
)
