"""Registries: decorator registration, duplicates, unknown names with suggestions, auto-import of packages."""

import pytest

from core.errors import RegistryError, UnknownComponentError
from core.registries import AGENTS, BLOCKS, CRITERIA, DATASETS, SEARCH_SPACES, SEARCH_STRATEGIES, TRAINING_STRATEGIES
from core.registry import Registry


def test_register_get_and_duplicate():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A and "a" in reg and reg.names() == ["a"]
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a")(type("B", (), {}))


def test_unknown_name_lists_valid_and_closest():
    with pytest.raises(UnknownComponentError) as err:
        SEARCH_SPACES.get("ProxylesNAS")
    msg = str(err.value)
    assert "did you mean ProxylessNAS?" in msg and "valid:" in msg


@pytest.mark.parametrize(
    "registry, expected",
    [
        (SEARCH_SPACES, {"ProxylessNAS"}),
        (BLOCKS, {"conv_bn_act", "mobile", "skip", "gap", "linear"}),
        (SEARCH_STRATEGIES, {"random", "evolution"}),
        (TRAINING_STRATEGIES, {"uniform"}),
        (CRITERIA, {"cross_entropy", "label_smoothing"}),
        (DATASETS, {"digits", "cifar10", "cifar100", "image_folder", "synthetic"}),
        (AGENTS, {"search", "evaluate"}),
    ],
)
def test_packages_register_themselves(registry, expected):
    assert expected <= set(registry.names())


def test_every_component_declares_params():
    for registry in (SEARCH_SPACES, SEARCH_STRATEGIES, TRAINING_STRATEGIES, CRITERIA, DATASETS):
        for name in registry.names():
            params = registry.get(name).Params
            params()  # every field has a default
