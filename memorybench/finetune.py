"""Old import path, kept for published plugins: the recipe and fine-tuning set live in
:mod:`memorybench.suites.finetune`, the job a training method sees in :mod:`memorybench.api.method`,
the loop in :mod:`memorybench.run.finetune`."""

from memorybench.api.method import FinetuneJob
from memorybench.run.finetune import SuiteFinetune, suite_finetune, trainable_parameters
from memorybench.suites.finetune import FinetuneRecipe, FinetuneSet

__all__ = ["FinetuneJob", "SuiteFinetune", "suite_finetune", "trainable_parameters", "FinetuneRecipe", "FinetuneSet"]
