"""--output-retention-hours: how long output images live without a lifecycle header (0 or never: forever)."""

from __future__ import annotations

import pytest

from fluxserve.cli.main import build_parser
from tests.unit.test_cli import settings


def test_outputs_are_kept_until_deleted_by_default_like_fal():
    assert settings([]).api.output_retention_s == 0


@pytest.mark.parametrize(
    ("given", "seconds"), [("48", 48 * 3600.0), ("never", 0.0), ("0", 0.0), ("0.5", 1800.0)]
)
def test_the_flag_and_its_variable_set_the_default_lifetime(given, seconds):
    assert settings(["--output-retention-hours", given]).api.output_retention_s == seconds
    assert settings([], env={"FLUXSERVE_OUTPUT_RETENTION_HOURS": given}).api.output_retention_s == seconds


@pytest.mark.parametrize("given", ["-1", "soon", "inf"])
def test_a_bad_value_stops_the_command(given, capsys):
    with pytest.raises(SystemExit):
        build_parser({}).parse_args(["serve", "--output-retention-hours", given])
    assert "must be 0 or more hours, or never" in capsys.readouterr().err
