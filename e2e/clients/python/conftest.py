"""pytest glue of the python suites: `@pytest.mark.feature(name)` names what a test verifies;
once the test passed, the feature is written to the suite's results file."""

import pytest

from common import record


def pytest_configure(config):
    config.addinivalue_line("markers", "feature(name): the client feature a test verifies")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed:
        for marker in item.iter_markers("feature"):
            record({"type": "feature", "feature": marker.args[0]})
