"""The model registry: names with wildcards, create with kwargs, helpful unknown-name errors."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import pointwise.models as pm
from pointwise.models.registry import Registry


def test_names_are_sorted_and_filtered_with_fnmatch():
    every = pm.names()
    assert sorted(every) == sorted(set(every)) and len(every) >= 13
    # natural order: the numbers in names compare as numbers
    assert pm.names("resnet[0-9]*") == ["resnet18", "resnet34", "resnet50", "resnet101",
                                        "resnet152"]
    assert pm.names("squeezenet1_?") == ["squeezenet1_0", "squeezenet1_1"]
    assert pm.names("mobilenet_v[12]") == ["mobilenet_v1", "mobilenet_v2"]
    assert pm.names("no such*") == []


def test_create_passes_kwargs():
    model = pm.create("squeezenet1_1", num_classes=3)
    assert model.classifier[1].out_channels == 3


def test_an_unknown_name_suggests_the_close_ones():
    with pytest.raises(ValueError) as e:
        pm.create("resnt50")
    msg = str(e.value)
    assert msg.startswith("unknown model 'resnt50'; did you mean 'resnet50'")
    assert f"(pointwise.models.names() lists all {len(pm.names())})" in msg


def test_a_family_prefix_suggests_its_members():
    with pytest.raises(ValueError) as e:
        pm.create("mobile")
    assert "'mobilenet_v1'" in str(e.value) and "'mobilenet_v2'" in str(e.value)


def test_a_name_with_nothing_close_says_where_to_look():
    with pytest.raises(ValueError) as e:
        pm.create("zzzz")
    assert "did you mean" not in str(e.value)
    assert "unknown model 'zzzz'; (pointwise.models.names() lists all" in str(e.value)


def test_unknown_kwargs_are_the_entry_points_error():
    with pytest.raises(TypeError, match="no_such_option"):
        pm.create("resnet18", no_such_option=1)


def test_registering_a_name_twice_raises():
    r = Registry()

    @r.register
    def tiny(num_classes=10):
        return ("tiny", num_classes)

    assert r.create("tiny", num_classes=2) == ("tiny", 2)
    assert "tiny" in r and len(r) == 1

    def tiny(num_classes=10):  # noqa: F811
        return None

    with pytest.raises(ValueError, match="already registered"):
        r.register(tiny)
    assert r.create("tiny") == ("tiny", 10)  # the first one is kept


def test_the_global_registry_refuses_a_taken_name_and_stays_unchanged():
    before = pm.names()

    def resnet50(**kwargs):
        return None

    with pytest.raises(ValueError, match="'resnet50', already registered by "
                                         "pointwise.models.resnet.resnet50"):
        pm.register_model(resnet50)
    assert pm.names() == before
    assert pm.create("resnet50", num_classes=2).fc.out_features == 2
