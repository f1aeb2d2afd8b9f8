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
