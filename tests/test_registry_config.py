"""Registry (names, did-you-mean, plugins, collisions) and config validation."""

from dataclasses import dataclass
from typing import Literal

import pytest

from memorybench import METHODS, Method
from memorybench.core.config import config_from_dict, config_sha256, config_to_dict, parse_set_options
from memorybench.errors import ConfigError, PluginError, UnknownNameError
from memorybench.api.registry import Registry, load_plugin


def test_builtin_none_is_listed_and_resolves():
    assert "none" in METHODS.names()
    cls = METHODS.get("none")
    assert cls.kind == "inference" and METHODS.source("none") == "builtin"


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownNameError) as err:
        METHODS.get("nnoe")
    assert "Did you mean 'none'" in str(err.value)


def _method(name, **attrs):
    return type(name.title().replace("-", ""), (Method,), {"name": name, **attrs})


def test_builtin_wins_collision_and_plugin_is_ignored():
    reg = Registry(kind="method", group="memorybench.test-nothing")
    builtin = _method("same")
    reg.register("same", builtin, source="builtin")
    with pytest.warns(UserWarning, match="built-in"):
        reg.register("same", _method("same"), source="plugin:x")
    assert reg.get("same") is builtin


def test_lazy_placeholder_that_fails_to_import_is_named():
    reg = Registry(kind="method", group="memorybench.test-nothing")
    reg.register_lazy("ghost", "memorybench_no_such_module:Ghost", source="entry-point:ghost-dist")
    with pytest.raises(PluginError, match="ghost.*entry-point:ghost-dist.*ModuleNotFoundError"):
        reg.get("ghost")
    assert "ghost" in reg.broken()


def test_plugin_file_registers_methods(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "from memorybench import Method, register_method\n"
        "@register_method()\n"
        "class Half(Method):\n"
        "    name = 'half-guidance-test'\n"
        "    description = 'test plugin'\n"
        "    def guidance_scale(self, step, num_steps, default):\n"
        "        return default / 2\n"
    )
    load_plugin(str(plugin))
    cls = METHODS.get("half-guidance-test")
    assert cls().guidance_scale(0, 10, 8.0) == 4.0
    assert METHODS.source("half-guidance-test") == f"plugin:{plugin}"


def test_broken_plugin_file_is_a_plugin_error(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("import numpy\nraise RuntimeError('boom at import')\n")
    with pytest.raises(PluginError, match="boom at import"):
        load_plugin(str(plugin))
    with pytest.raises(PluginError, match="does not exist"):
        load_plugin(str(tmp_path / "missing.py"))


def test_malformed_method_rejected_at_registration():
    with pytest.raises(TypeError, match="kind"):
        METHODS.register("bad-kind", _method("bad-kind", kind="sometimes"), source="plugin:x")


@dataclass
class Cfg:
    lr: float = 0.05
    iters: int = 10
    mode: Literal["early", "late"] = "early"
    layers: tuple[int, ...] = (0, 1)
    target: float | None = None


def test_config_accepts_valid_and_coerces_int_to_float():
    cfg = config_from_dict(Cfg, {"lr": 1, "layers": [2, 3], "target": 3})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.layers == (2, 3) and cfg.target == 3.0


@pytest.mark.parametrize(
    "data, message",
    [
        ({"lrr": 0.1}, "unknown key 'lrr'. Did you mean 'lr'"),
        ({"iters": 2.5}, "iters: expected an integer"),
        ({"iters": True}, "iters: expected an integer"),
        ({"mode": "middle"}, "mode: must be one of 'early', 'late'"),
        ({"layers": [1, "x"]}, r"layers\[1\]: expected an integer"),
        ({"lr": "fast"}, "lr: expected a number"),
    ],
)
def test_config_rejects_bad_input_by_name(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(Cfg, data, owner="method 'x'")


def test_config_round_trip_and_hash_is_stable():
    cfg = config_from_dict(Cfg, {"mode": "late"})
    again = config_from_dict(Cfg, config_to_dict(cfg))
    assert again == cfg and config_sha256(again) == config_sha256(cfg)
    assert config_sha256(config_from_dict(Cfg, {"lr": 0.1})) != config_sha256(cfg)


def test_parse_set_options_reads_json_values():
    assert parse_set_options(["lr=0.1", "mode=late", "layers=[1,2]", "flag=true"]) == {
        "lr": 0.1, "mode": "late", "layers": [1, 2], "flag": True}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_options(["novalue"])


def test_plugin_cannot_shadow_a_lazy_builtin():
    reg = Registry(kind="method", group="memorybench.test-nothing")
    reg.register_lazy("none", "memorybench.methods.none:NoMitigation", source="builtin")
    with pytest.warns(UserWarning, match="built-in"):
        reg.register("none", _method("none"), source="plugin:evil.py")
    assert reg.get("none").__module__ == "memorybench.methods.none"


def test_one_registry_type_for_every_kind_of_plugin():
    """Methods, detectors, metrics and data sources share one Registry type, each with its
    own entry-point group, built-ins known by name without importing them."""
    from memorybench import DETECTORS, METRICS
    from memorybench.suites.data import DATA_SOURCES

    registries = {"memorybench.methods": METHODS, "memorybench.detectors": DETECTORS,
                  "memorybench.metrics": METRICS, "memorybench.data_sources": DATA_SOURCES}
    for group, registry in registries.items():
        assert type(registry) is Registry and registry.group == group
        assert registry.builtin_names() and all(registry.source(n) == "builtin" for n in registry.builtin_names())
    assert {"inline", "tinyworld", "finetune-dup", "webster500", "coco-captions"} <= set(DATA_SOURCES.builtin_names())
    with pytest.raises(UnknownNameError, match="unknown data source 'tinyworl'. Did you mean 'tinyworld'"):
        DATA_SOURCES.source("tinyworl")


def test_a_plugin_data_source_feeds_a_suite(tmp_path):
    """A data source registered from a plugin file is used by a suite YAML that names it,
    gets the user's --data paths only when it declares user_data, and is listed by source."""
    from memorybench.suites.data import DATA_SOURCES, load_suite_data
    from memorybench.suites.spec import load_suite

    plugin = tmp_path / "my_source.py"
    plugin.write_text(
        "from memorybench.suites.data import SuiteData, register_data_source\n"
        "@register_data_source('test-two-prompts', user_data=True)\n"
        "def two(suite, paths):\n"
        "    '''Two prompts and the words of a user file.'''\n"
        "    words = open(paths['words']).read().split()\n"
        "    return SuiteData(prompts={'memorized': words[:2]}, seeds={'memorized': [0]})\n")
    load_plugin(str(plugin))
    assert DATA_SOURCES.source("test-two-prompts") == f"plugin:{plugin}"
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text("name: plug\nversion: 1\ndescription: d\nmodel: dummy\ndata: test-two-prompts\n"
                          "prompt_sets: [{name: memorized, seeds: 1}]\nmetrics: []\nsummary: []\n")
    (tmp_path / "words.txt").write_text("a red cat\n")
    data = load_suite_data(load_suite(str(suite_file)), {"words": str(tmp_path / "words.txt")})
    assert data.prompts == {"memorized": ["a", "red"]}
    with pytest.raises(ConfigError, match="reads no local data"):
        load_suite_data(load_suite("smoke-v1"), {"words": "x"})
