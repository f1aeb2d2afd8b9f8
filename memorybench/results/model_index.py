"""A leaderboard entry in the Hugging Face ``model-index`` form (model card metadata).

The Hub reads evaluation results from a model card's YAML front matter as
``model-index: [{name, results: [{task, dataset, metrics}]}]``. One entry of a memorybench
leaderboard becomes one result whose dataset is the suite (its hash as the revision) and
whose metrics are the suite's summary columns, each with n, CI and implementation as args.
The numbers are self-reported, so ``verified`` is false.
"""

from __future__ import annotations

import json
from typing import Any

import yaml


def model_index(entry: dict[str, Any]) -> dict[str, Any]:
    result = entry["result"]
    method, suite, model = result["method"], result["suite"], result["model"]
    metrics = []
    for column, value in result["summary"].items():
        m = result["metrics"][column]
        direction = "higher" if m["higher_is_better"] else "lower"
        metrics.append({
            "type": column,
            "value": value,
            "name": f"{column} ({direction} is better)",
            "args": {"n": m["n"], "ci95": list(m["ci95"]), "implementation": m["implementation"]},
            "verified": False,
        })
    return {"model-index": [{
        "name": f"{model['id']} + {method['name']} (config {method['config_sha256'][:8]})",
        "results": [{
            "task": {"type": "text-to-image", "name": "Memorization mitigation (memorybench)"},
            "dataset": {
                "type": f"memorybench/{suite['name']}",
                "name": f"memorybench suite {suite['name']} v{suite['version']}",
                "revision": suite["sha256"],
                "args": {"model_weights_sha256": model["weights_sha256"], "sampler": model["sampler"],
                         "steps": model["steps"], "guidance": model["guidance"],
                         "method_config": method["config"], "method_config_sha256": method["config_sha256"],
                         "memorybench_version": result["provenance"]["memorybench_version"],
                         "memorybench_commit": result["provenance"]["memorybench_commit"]},
            },
            "metrics": metrics,
        }],
    }]}


def render(entry: dict[str, Any], fmt: str = "yaml") -> str:
    data = model_index(entry)
    if fmt == "json":
        return json.dumps(data, indent=2, allow_nan=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
