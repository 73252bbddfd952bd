"""The orchestrator tests' keyframe images, shared with the compatibility tests."""

from tests.orchestrators.conftest import keyframes  # noqa: F401  (fixture)
