"""The README's config reference shows every key with its real default (so the two cannot drift)."""

import os
import re

from core.config import build_config, flatten, yaml_load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_reference_block() -> dict:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Config reference") :]
    return yaml_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def test_readme_config_reference_equals_the_defaults():
    shown = flatten(config_reference_block())
    defaults = flatten(build_config({}).to_dict())
    assert sorted(shown) == sorted(defaults), set(shown) ^ set(defaults)
    wrong = {k: (shown[k], defaults[k]) for k in defaults if shown[k] != defaults[k]}
    assert wrong == {}


def test_readme_config_reference_is_a_valid_config():
    assert build_config(config_reference_block()).validate().to_dict() == build_config({}).to_dict()
