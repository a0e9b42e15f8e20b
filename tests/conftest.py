import os

import pytest
from hypothesis import settings


from tests.lab import Lab, missing_requirements

# scripts/test sets this: there, a lab test that cannot run is a failure, not a skip.
REQUIRE_LAB = os.environ.get("CASTWALL_REQUIRE_LAB") == "1"
# scripts/test sets this for its second stack: the tests of the lab itself ran on the first.
SKIP_HARNESS = os.environ.get("CASTWALL_SKIP_HARNESS") == "1"

# No deadline for property tests: on a loaded 2-core machine hypothesis's 200 ms would fail a correct
# example by the clock alone. Each property bounds its own work (max_examples, sizes).
settings.register_profile("castwall", deadline=None)
settings.load_profile("castwall")


def pytest_collection_modifyitems(config, items):
    if not SKIP_HARNESS:
        return
    kept = [i for i in items if i.get_closest_marker("harness") is None]
    config.hook.pytest_deselected(items=[i for i in items if i not in kept])
    items[:] = kept


def need(why: str | None) -> None:
    """Skip the test for this reason (None: it can run), or fail it where scripts/test requires everything to run."""
    if why:
        if REQUIRE_LAB:
            pytest.fail(f"required but unavailable: {why}")
        pytest.skip(why)


def lab_or_skip():
    need(missing_requirements())


@pytest.fixture
def make_lab():
    """Build labs on demand; every one is torn down, even when the test fails."""
    lab_or_skip()
    labs = []

    def make(**kw) -> Lab:
        lab = Lab(**kw)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.close()
