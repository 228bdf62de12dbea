"""--stream-previews: off by default, on by the flag or FLUXSERVE_STREAM_PREVIEWS, into ApiSettings."""

from __future__ import annotations

from fluxserve.cli.main import build_parser, settings_from_args
from fluxserve.core.settings import ApiSettings


def test_stream_previews_are_off_unless_the_flag_or_its_variable_turns_them_on():
    def previews(argv: list[str], env: dict[str, str]) -> bool:
        return settings_from_args(build_parser(env).parse_args(["serve", *argv])).api.stream_previews

    assert previews([], {}) is ApiSettings.stream_previews is False
    assert previews(["--stream-previews", "on"], {}) is True
    assert previews([], {"FLUXSERVE_STREAM_PREVIEWS": "on"}) is True
    assert previews(["--stream-previews", "off"], {"FLUXSERVE_STREAM_PREVIEWS": "on"}) is False
