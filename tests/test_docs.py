"""Documentation stays true: every config key and every hook is documented."""

from pathlib import Path

from rendergrad import hookspecs
from rendergrad.config import LIST_SECTIONS, SCHEMA

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_config_key_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for section, keys in SCHEMA.items():
        heading = f"## [[{section}]]" if section in LIST_SECTIONS else f"## [{section}]"
        assert heading in text, section
        for key in keys:
            assert f"| `{key}` |" in text, f"[{section}] {key}"


def test_every_hook_is_in_the_plugin_guide():
    text = (DOCS / "plugins.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("rendergrad_")]
    assert hooks
    for name in hooks:
        assert name in text, name
