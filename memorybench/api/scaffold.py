"""``memorybench new-method``: an installable plugin package that validates unchanged."""

from __future__ import annotations

import re
from pathlib import Path

from memorybench.errors import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "memorybench method plugin: {name}"
requires-python = ">=3.11"
dependencies = ["memorybench"]

[project.entry-points."memorybench.methods"]
{name} = "{package}.method:{cls}"

[tool.setuptools]
packages = ["{package}"]
'''

METHOD = '''"""{name}: a memorybench mitigation method (edit me).

This template weakens classifier-free guidance during the first denoising steps, where
memorized prompts commit to their training image. Replace the hook with your method;
`memorybench validate {name}` checks that it is reversible and that its config
round-trips through JSON.
"""

from dataclasses import dataclass

from memorybench import Method


@dataclass
class {cls}Config:
    early_steps: int = 5  # steps at the start that use the weaker guidance
    early_guidance: float = 1.0  # guidance scale during those steps

    def __post_init__(self):
        if self.early_steps < 0:
            raise ValueError("early_steps must be >= 0")


class {cls}(Method):
    name = "{name}"
    kind = "inference"  # "weight-edit", "inference" or "training"
    description = "Weaker classifier-free guidance in the first steps (template; edit me)"
    Config = {cls}Config
    reference = ""

    def guidance_scale(self, step, num_steps, default):
        return self.config.early_guidance if step < self.config.early_steps else default

    # Other optional hooks (memorybench.Method documents each):
    #   prepare(pipe, ctx)                         edit weights once, through ctx
    #   attention_processors(pipe)                 cross-attention processors
    #   prompt_embeds(pipe, cond, uncond, latents, settings, prompts)
    #   adjust_initial_latents(pipe, latents, cond, uncond, settings)
    #                                              the batch's initial noise; a row may read only its own
    #                                              prompt and seed (validate checks it)
    #   combine_guidance(pipe, step, t, prediction, guidance)
    #                                              the step's noise prediction from both CFG halves
    #   on_step(pipe, step, t, latents)            latents after each scheduler step
    #   training_hook(pipe, ctx, job)              kind "training": inside a suite fine-tune; its
    #                                              TrainingHook may weigh each sample's loss
    #                                              (sample_weights), edit gradients (before_step)
    #                                              and parameters (after_step)
'''

TEST = '''from memorybench import METHODS
from memorybench.run.validate import validate_method


def test_method_is_registered_and_valid():
    report = validate_method(METHODS.get("{name}"))
    assert report.ok, report.lines()


def test_config_rejects_unknown_key():
    import pytest
    from memorybench.errors import ConfigError

    with pytest.raises(ConfigError):
        METHODS.get("{name}").from_settings({{"not_a_key": 1}})
'''

README = '''# {dist}

A [memorybench](https://pypi.org/project/memorybench/) mitigation method.

    pip install .
    memorybench validate {name}
    memorybench run --suite tinyworld-v1 --method {name}
'''


def scaffold_method(name: str, folder: Path, force: bool = False) -> Path:
    if not _NAME.match(name):
        raise ConfigError(f"method name '{name}' must be lower-case words joined by '-', e.g. my-method")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise ConfigError(f"folder '{folder}' exists and is not empty (use --force to write into it)")
    snake = name.replace("-", "_")
    fields = {
        "name": name,
        "dist": f"memorybench-{name}",
        "package": f"memorybench_{snake}",
        "cls": "".join(part.capitalize() for part in name.split("-")),
    }
    pkg = folder / fields["package"]
    (folder / "tests").mkdir(parents=True, exist_ok=True)
    pkg.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(PYPROJECT.format(**fields))
    (folder / "README.md").write_text(README.format(**fields))
    (pkg / "__init__.py").write_text(f'"""memorybench method plugin {name}."""\n')
    (pkg / "method.py").write_text(METHOD.format(**fields))
    (folder / "tests" / f"test_{snake}.py").write_text(TEST.format(**fields))
    return folder
