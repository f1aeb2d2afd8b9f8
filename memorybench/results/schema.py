"""JSON Schema of result files (v1). The file ``leaderboards/schema/result-v1.json`` is
written from this dict by ``memorybench schema --write`` and a test keeps them equal."""

from __future__ import annotations

SCHEMA_VERSION = 1

_NUMBER = {"type": "number"}
_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

METRIC_SCHEMA = {
    "type": "object",
    "description": "One metric: its value and how far to trust it.",
    "required": ["value", "n", "ci95", "higher_is_better", "implementation"],
    "properties": {
        "value": {**_NUMBER, "description": "The metric's value."},
        "n": {"type": "integer", "minimum": 0, "description": "Independent units averaged (prompts, images or pairs)."},
        "ci95": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": ["number", "null"]},
                 "description": "95% confidence interval [low, high] (bootstrap over units); nulls when n is too small."},
        "higher_is_better": {"type": "boolean", "description": "Direction of improvement."},
        "implementation": {"type": "string", "description": "Code and model that computed it, e.g. sscd/onnx-disc_mixup/..."},
        "protocol": {"type": "object", "description": "Every choice that changes the number (preprocessing, aggregation, threshold)."},
        "per_prompt": {"type": "object", "additionalProperties": _NUMBER,
                       "description": "Optional: the value of each prompt the metric averages (prompt -> value)."},
    },
    "additionalProperties": False,
}

_TIMING = {
    "type": "object", "description": "One side of the timed batch.",
    "required": ["seconds_per_image", "peak_memory_mb"],
    "properties": {
        "seconds_per_image": {**_NUMBER, "exclusiveMinimum": 0, "description": "Fastest of the repeats."},
        "seconds_per_image_runs": {"type": "array", "items": _NUMBER, "description": "Every repeat."},
        "peak_memory_mb": {**_NUMBER, "description": "Peak memory while this side ran."},
    },
}

VS_NONE_SCHEMA = {
    "type": ["object", "null"],
    "description": "One identical small batch timed uncached with the method and then with none, back to back "
                   "in the same process: the cost ratio to compare across methods. Null in a smoke run "
                   "(suite.smoke), which times nothing.",
    "required": ["batch", "method", "none", "seconds_per_image_ratio", "peak_memory_ratio", "measured_in"],
    "properties": {
        "batch": {"type": "object", "description": "What was timed: prompt set, prompt count, seed, steps, repeats."},
        "method": {**_TIMING, "description": "The batch with the method applied."},
        "none": {**_TIMING, "description": "The same batch with no mitigation."},
        "seconds_per_image_ratio": {**_NUMBER, "description": "method / none seconds per image."},
        "peak_memory_ratio": {**_NUMBER, "description": "method / none peak memory."},
        "measured_in": {"type": "string", "description": "This run, or the earlier run whose images were reused."},
        "measured_utc": {"type": "string", "description": "ISO 8601 time of the measurement."},
    },
}

THUMBNAILS_SCHEMA = {
    "type": "object",
    "description": "A small PNG grid beside the result: rows = first memorized prompts, first column = their "
                   "training image (when the suite has one), then one column per seed.",
    "required": ["file", "sha256", "prompt_set", "prompts", "seeds", "source_column", "cell_px"],
    "properties": {
        "file": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,200}[.]png$",
                 "description": "File name in the result's folder (no path)."},
        "sha256": {**_SHA, "description": "sha256 of the PNG file: its address on a leaderboard."},
        "prompt_set": {"type": "string"},
        "prompts": {"type": "array", "items": {"type": "string"}, "description": "One row per prompt."},
        "seeds": {"type": "array", "items": {"type": "integer"}, "description": "One column per seed."},
        "source_column": {"type": "boolean", "description": "Whether the first column is the training image."},
        "cell_px": {"type": "integer", "minimum": 1, "description": "Side of one cell in pixels."},
    },
    "additionalProperties": False,
}

RESULT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "memorybench/result-v1.json",
    "title": "memorybench result",
    "description": "One evaluation of one method with one config on one suite.",
    "type": "object",
    "required": ["schema_version", "suite", "method", "model", "summary", "metrics", "cost", "provenance"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION, "description": "Version of this schema."},
        "suite": {
            "type": "object", "description": "The suite that defines prompts, seeds, sampler and metrics.",
            "required": ["name", "version", "sha256"],
            "properties": {
                "name": {"type": "string", "description": "Suite name, e.g. tinyworld-v1."},
                "version": {"type": "integer", "description": "Suite version; results of different versions are not comparable."},
                "sha256": {**_SHA, "description": "Hash of the suite's canonical JSON spec."},
                "data": {"type": "object", "description": "Hashes of the data files the suite read (name -> sha256)."},
            },
        },
        "method": {
            "type": "object", "description": "The mitigation method and its exact config.",
            "required": ["name", "kind", "config", "config_sha256"],
            "properties": {
                "name": {"type": "string", "description": "Registered method name."},
                "kind": {"enum": ["weight-edit", "inference", "training"], "description": "When the method acts."},
                "config": {"type": "object", "description": "Full config, defaults included."},
                "config_sha256": {**_SHA, "description": "Hash of the canonical config JSON."},
                "source": {"type": "string", "description": "builtin, entry-point:<dist> or plugin:<module>."},
                "reference": {"type": "string", "description": "Where the method and its defaults come from."},
                "report": {"type": "object", "description": "The method's own figures (e.g. mask density)."},
            },
        },
        "model": {
            "type": "object", "description": "The model and sampler (no local paths).",
            "required": ["id", "weights_sha256", "sampler", "steps", "guidance", "dtype"],
            "properties": {
                "id": {"type": "string", "description": "Model name without local paths."},
                "weights_sha256": {**_SHA, "description": "Hash of the weights (files or in-memory tensors)."},
                "sampler": {"type": "string", "description": "Scheduler name (ddim, pndm, dpmsolver, euler)."},
                "steps": {"type": "integer", "description": "Denoising steps."},
                "guidance": {**_NUMBER, "description": "Classifier-free guidance scale."},
                "dtype": {"type": "string", "description": "Compute dtype."},
                "resolution": {"type": "array", "items": {"type": "integer"}, "description": "[height, width] in pixels."},
            },
        },
        "summary": {
            "type": "object", "description": "Leaderboard columns: metric name -> value (equal to metrics[name].value).",
            "additionalProperties": _NUMBER,
        },
        "metrics": {"type": "object", "description": "Every metric with n, CI and protocol.",
                    "additionalProperties": METRIC_SCHEMA},
        "calibration": {"type": "object", "description": "Floors and thresholds the suite derived (e.g. copy threshold)."},
        "thumbnails": THUMBNAILS_SCHEMA,
        "cost": {
            "type": "object", "description": "What the method costs.",
            "required": ["seconds_per_image", "peak_memory_mb", "preparation_seconds", "vs_none"],
            "properties": {
                "seconds_per_image": {**_NUMBER, "description": "Generation wall time per image (from the cache manifest)."},
                "peak_memory_mb": {**_NUMBER, "description": "Peak resident (CPU) or allocated (GPU) memory."},
                "preparation_seconds": {**_NUMBER, "description": "One-off cost of prepare (pruning, fine-tuning)."},
                "images_generated": {"type": "integer", "description": "Images generated in this run."},
                "images_from_cache": {"type": "integer", "description": "Images taken from the cache."},
                "vs_none": VS_NONE_SCHEMA,
            },
        },
        "provenance": {
            "type": "object", "description": "How the numbers were made.",
            "required": ["memorybench_version", "memorybench_commit", "packages", "python", "platform",
                         "hardware", "seeds", "wall_seconds", "command", "created_utc"],
            "properties": {
                "memorybench_version": {"type": "string", "description": "Installed memorybench version."},
                "memorybench_commit": {"type": ["string", "null"], "description": "Git commit of memorybench, when known."},
                "memorybench_dirty": {"type": ["boolean", "null"], "description": "Uncommitted changes in the source tree."},
                "packages": {"type": "object", "description": "Versions of the packages that shape the numbers."},
                "python": {"type": "string", "description": "Python version."},
                "platform": {"type": "string", "description": "OS and architecture."},
                "hardware": {"type": "object", "description": "CPU, cores, GPU."},
                "seeds": {"type": "object", "description": "Seeds per prompt set."},
                "wall_seconds": {**_NUMBER, "description": "Wall time of the whole run."},
                "command": {"type": "string", "description": "The command line that produced the result."},
                "created_utc": {"type": "string", "description": "ISO 8601 time the result was written."},
            },
        },
    },
}
