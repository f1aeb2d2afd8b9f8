"""The run request: the command line parsed and checked once, before any model loads."""

import pytest

from memorybench.errors import ConfigError, ModelError, UnknownNameError
from memorybench.run.request import RunOptions, build_run_request, parse_method_list


def test_one_method_is_a_list_of_one_with_the_default_result_path():
    request = build_run_request("smoke-v1", "none")
    assert [m.name for m in request.methods] == ["none"]
    method = request.methods[0].build()
    assert str(request.output_path(method)) == f"results/smoke-v1/none-{method.config_sha256()[:8]}.json"


def test_several_methods_get_their_own_settings_and_files(tmp_path):
    request = build_run_request("smoke-v1", "wanda-prune,none", {"wanda-prune:sparsity": 0.02},
                                output_dir=str(tmp_path))
    assert [m.name for m in request.methods] == ["none", "wanda-prune"]  # none first: the cost baseline
    assert request.methods[1].settings == {"sparsity": 0.02} and request.methods[0].settings == {}
    wanda = request.methods[1].build()
    assert request.output_path(wanda) == tmp_path / f"wanda-prune-{wanda.config_sha256()[:8]}.json"


def test_suite_options_are_applied_and_recorded():
    request = build_run_request("sd-webster500-v1", "none", suite_options={"sscd_protocol": "wen2024"})
    assert request.suite.options["sscd_protocol"] == "wen2024"
    assert request.options.extra_provenance == {"suite_options": {"sscd_protocol": "wen2024"}}


@pytest.mark.parametrize("kwargs, error, message", [
    ({"methods": "none,wanda-prune", "output": "x.json"}, ConfigError, "use --output-dir"),
    ({"methods": "none", "settings": {"strength": 2}}, ConfigError, "unknown key 'strength'"),
    ({"methods": "none,wanda-prune", "settings": {"sparsity": 0.1}}, ConfigError, "name the method"),
    ({"methods": "none", "options": RunOptions(model_path="/nonexistent/sd15")}, ModelError, "does not exist"),
    ({"methods": "nonee"}, UnknownNameError, "Did you mean 'none'"),
    ({"methods": "none", "suite_options": {"no_such_option": 1}}, ConfigError, "has no option 'no_such_option'"),
])
def test_mistakes_are_refused_before_any_work(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_run_request("smoke-v1", **kwargs)


def test_all_is_every_builtin_method_with_none_first():
    from memorybench import METHODS

    names = parse_method_list("all")
    assert names[0] == "none" and sorted(names) == sorted(METHODS.builtin_names())
