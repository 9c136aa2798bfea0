"""Suite-wide test settings shared by the unit and integration tests."""

from __future__ import annotations

import os

from hypothesis import settings

# Two cores shared with other work: a slow example means load, not a bug, so no deadline.
# HYPOTHESIS_PROFILE=thorough runs more examples when there is time.
settings.register_profile("repo", deadline=None)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repo"))
