"""hypothesis profiles for the proofs_check tests.

``HYPOTHESIS_PROFILE=slow`` runs many more examples (``pytest -m slow`` is not needed for that;
the property tests read it through :func:`proofs_check.strategies.property_settings`).
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "proofs_check-fast",
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "slow",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
