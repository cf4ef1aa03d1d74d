"""The alerting and recording rules load in Prometheus (`promtool check rules`) and behave as
their unit tests say (`promtool test rules`): burn-rate alerts page on a fast burn, ticket on a
slow one, stay quiet within budget, and stop paging soon after the burn stops; the pipeline's
health alerts fire on lag, store errors, rejections, silence and failed alert delivery."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.dashboards.grafana import RULES_FILE, RULES_TEST_FILE

pytestmark = pytest.mark.integration


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe is not None, "promtool is missing: scripts/setup.sh installs Debian's prometheus package"
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False, timeout=120)


def test_promtool_check_rules_accepts_the_rules() -> None:
    out = promtool("check", "rules", str(RULES_FILE))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules_passes() -> None:
    out = promtool("test", "rules", str(RULES_TEST_FILE))
    assert out.returncode == 0, out.stdout + out.stderr
