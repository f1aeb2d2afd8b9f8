"""Pipeline adapter: one interface over any StableDiffusionPipeline-shaped model.

It owns the denoising loop (rather than calling ``pipe.__call__``) so that methods can
change prompt embeddings, guidance per step, latents per step and cross-attention
processors, and so that every image gets its own noise generator: an image depends on
its prompt and seed, never on which batch it was generated in.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from memorybench.errors import ConfigError, ModelError, NonFiniteOutputError
from memorybench.model.sampling import SAMPLERS, SamplerSettings, SamplingState

# Components a StableDiffusionPipeline folder must hold (safety checker optional).
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the offline rule: never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_dtype(device: str) -> torch.dtype:
    return torch.float16 if device.startswith("cuda") else torch.float32


def parse_dtype(name: str | None, device: str) -> torch.dtype:
    if name in (None, "auto"):
        return default_dtype(device)
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise ConfigError(f"unknown dtype '{name}': choose one of auto, {', '.join(table)}")
    if device == "cpu" and name == "fp16":
        raise ConfigError("fp16 is not supported on CPU: use fp32 (the default) or bf16")
    return table[name]


def check_model_folder(path: Path) -> None:
    """Fail with one line naming what is missing from a diffusers pipeline folder."""
    if not path.exists():
        raise ModelError(f"model folder '{path}' does not exist (expected a diffusers StableDiffusionPipeline folder with model_index.json)")
    if not path.is_dir():
        raise ModelError(f"model path '{path}' is not a folder (expected a diffusers pipeline folder)")
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelError(f"model folder '{path}' has no model_index.json: point --model at a saved diffusers StableDiffusionPipeline")
    try:
        spec = json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"'{index}' is not valid JSON: {exc}") from exc
    missing = [c for c in REQUIRED_COMPONENTS if c not in spec or not (path / c).is_dir()]
    if missing:
        raise ModelError(f"model folder '{path}' is missing component folder(s): {', '.join(missing)}")
    for comp in ("unet", "vae", "text_encoder"):
        files = [p for p in (path / comp).iterdir() if p.suffix in (".safetensors", ".bin")]
        if not files:
            raise ModelError(f"model folder '{path}/{comp}' holds no weights (*.safetensors or *.bin)")


def _is_xl_folder(folder: Path) -> bool:
    from memorybench.core.io import read_json_strict

    index = folder / "model_index.json"
    return index.is_file() and "XL" in str(read_json_strict(index).get("_class_name", ""))


def folder_weights_sha256(path: Path) -> str:
    """sha256 over every weight and config file of a pipeline folder (relative names)."""
    files = [p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt")]
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _check_finite(x: torch.Tensor, what: str) -> None:
    bad = ~torch.isfinite(x.flatten(1)).all(dim=1)
    if bool(bad.any()):
        raise NonFiniteOutputError(
            f"generation gave NaN or Infinity in the {what} of {int(bad.sum())} of {len(bad)} images "
            "(a setting too large or of the wrong sign overflowed, or the weights are broken); nothing was cached")


def state_sha256(modules: dict[str, torch.nn.Module]) -> str:
    """sha256 of parameters and buffers: identifies in-memory weights bit-exactly."""
    h = hashlib.sha256()
    for name in sorted(modules):
        for key, tensor in sorted(modules[name].state_dict().items()):
            h.update(f"{name}.{key}".encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CFGPrediction:
    """Both halves of one classifier-free-guidance UNet call, as the UNet returned them."""

    uncond: torch.Tensor
    cond: torch.Tensor
    model_input: torch.Tensor  # x_t as the UNet saw it (after scale_model_input), one half

    def guided(self, guidance: float) -> torch.Tensor:
        return self.uncond + guidance * (self.cond - self.uncond)


class SamplingHooks(Protocol):
    """What the denoising loop calls on a method (``memorybench.Method`` implements it)."""

    def prompt_embeds(self, pipe: "PipelineAdapter", cond: torch.Tensor, uncond: torch.Tensor,
                      latents: torch.Tensor, settings: SamplerSettings, prompts: list[str]) -> torch.Tensor: ...

    def guidance_scale(self, step: int, num_steps: int, default: float) -> float: ...

    def on_step(self, pipe: "PipelineAdapter", step: int, t: Any, latents: torch.Tensor) -> torch.Tensor: ...

    # optional (``Method`` has both): adjust_initial_latents(pipe, latents, cond, uncond, settings)
    # and combine_guidance(pipe, step, t, prediction, guidance)


class PipelineAdapter:
    """Wraps a diffusers StableDiffusionPipeline (or one built in code)."""

    def __init__(self, pipe: Any, model_id: str, weights_sha256: str, device: str = "cpu",
                 dtype: torch.dtype | None = None):
        self.pipe = pipe
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.device = device
        self.dtype = dtype or default_dtype(device)
        pipe.to(device)
        if pipe.unet.dtype != self.dtype:
            pipe.to(dtype=self.dtype)
        for module in self.modules().values():
            module.eval()
            module.requires_grad_(False)
        self.state = SamplingState()
        self._pooled: dict[str, torch.Tensor] = {}  # SDXL: prompt -> pooled text embedding
        # True: every image is sampled and decoded on its own, so it is bit-identical whatever the
        # batch it came in (CPU kernels block a batch differently by size: 1 level in ~1e-4 of
        # pixels otherwise). Costs the batching speed-up.
        self.batch_invariant = False
        self._base_scheduler_config = dict(pipe.scheduler.config)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_folder(cls, path: str | Path, device: str = "cpu", dtype: str | None = None,
                    model_id: str | None = None) -> "PipelineAdapter":
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        folder = Path(path).expanduser()
        check_model_folder(folder)
        torch_dtype = parse_dtype(dtype, device)
        xl = _is_xl_folder(folder)
        pipeline_cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
        no_checker = {} if xl else {"safety_checker": None, "requires_safety_checker": False}
        try:
            pipe = pipeline_cls.from_pretrained(folder, local_files_only=True, torch_dtype=torch_dtype, **no_checker)
        except Exception as exc:  # diffusers' own message names the broken component
            raise ModelError(f"could not load model folder '{folder}': {type(exc).__name__}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, model_id or folder.name, folder_weights_sha256(folder), device, torch_dtype)

    @classmethod
    def dummy(cls, seed: int = 0, device: str = "cpu") -> "PipelineAdapter":
        """Random-weights tiny SD pipeline built in code (tests, smoke runs)."""
        from memorybench.model.dummy import build_dummy_pipeline

        pipe = build_dummy_pipeline(seed)
        adapter = cls(pipe, f"dummy-random-sd-seed{seed}", "", device)
        object.__setattr__(adapter, "weights_sha256", adapter.state_sha256())
        return adapter

    # -- components -----------------------------------------------------------------
    unet = property(lambda self: self.pipe.unet, doc="The diffusers UNet2DConditionModel.")
    text_encoder = property(lambda self: self.pipe.text_encoder, doc="The CLIP-shaped text encoder.")
    tokenizer = property(lambda self: self.pipe.tokenizer, doc="The text encoder's tokenizer.")
    vae = property(lambda self: self.pipe.vae, doc="The autoencoder that maps latents to images.")

    @property
    def dtype_name(self) -> str:
        """The dtype as results record it: fp32, fp16 or bf16."""
        return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    @property
    def is_sdxl(self) -> bool:
        """SDXL: two text encoders, pooled text embeddings and added time ids."""
        return getattr(self.pipe, "text_encoder_2", None) is not None

    def modules(self) -> dict[str, torch.nn.Module]:
        mods = {"unet": self.pipe.unet, "vae": self.pipe.vae, "text_encoder": self.pipe.text_encoder}
        if self.is_sdxl:
            mods["text_encoder_2"] = self.pipe.text_encoder_2
        return mods

    def state_sha256(self) -> str:
        return state_sha256(self.modules())

    def transformer_blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """The UNet's BasicTransformerBlocks: ``block.ff.net[2]`` is the FFN's second Linear,
        ``block.attn2`` is cross-attention."""
        return [(n, m) for n, m in self.unet.named_modules() if type(m).__name__ == "BasicTransformerBlock"]

    def attn2_processor_keys(self) -> list[str]:
        return [k for k in self.unet.attn_processors if ".attn2." in k]

    # -- text -----------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        return tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids.to(self.device)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """The per-token text conditioning the UNet's cross-attention reads."""
        if self.is_sdxl:
            return self._encode_xl(list(prompts))
        ids = self.tokenize(prompts)
        return self.text_encoder(ids)[0].to(self.dtype)

    def _encode_xl(self, prompts: list[str]) -> torch.Tensor:
        # As SDXL's own pipeline: both encoders' penultimate hidden states side by side, the
        # second encoder's projected EOS state as the pooled embedding; the empty prompt is
        # all zeros when the model says so (force_zeros_for_empty_prompt).
        hidden = []
        for tok, enc in ((self.pipe.tokenizer, self.pipe.text_encoder),
                         (self.pipe.tokenizer_2, self.pipe.text_encoder_2)):
            ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(self.device)
            out = enc(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
        cond, pooled = torch.cat(hidden, dim=-1).to(self.dtype), out[0].to(self.dtype)
        if getattr(self.pipe.config, "force_zeros_for_empty_prompt", False):
            empty = torch.tensor([p == "" for p in prompts], device=cond.device)
            cond = torch.where(empty[:, None, None], torch.zeros_like(cond), cond)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        for prompt, vector in zip(prompts, pooled):
            self._pooled[prompt] = vector
        return cond

    def _added_conditions(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """SDXL's pooled text embeddings and time ids for a ``[uncond; cond]`` UNet batch.
        They follow the prompts of the batch in ``state`` (the pooled embedding is a property of
        the prompt text; a method that edits the token embeddings leaves it as it was)."""
        prompts = self.state.prompts
        n = latents.shape[0]
        if len(prompts) != n:
            raise ModelError(f"SDXL needs the batch's prompts in pipe.state ({len(prompts)} for {n} latents): "
                             "call the UNet between state.begin() and state.end()")
        missing = [p for p in dict.fromkeys(prompts + [""]) if p not in self._pooled]
        if missing:
            self.encode_prompts(missing)
        pooled = torch.stack([self._pooled[""]] * n + [self._pooled[p] for p in prompts])
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        h, w = latents.shape[-2] * factor, latents.shape[-1] * factor
        # original size, crop top-left, target size: an uncropped image at the sampled size
        time_ids = torch.tensor([h, w, 0, 0, h, w], device=latents.device, dtype=self.dtype).repeat(2 * n, 1)
        return {"text_embeds": pooled.to(latents.device), "time_ids": time_ids}

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids)[0].to(self.dtype)

    # -- sampling -------------------------------------------------------------------
    def make_scheduler(self, sampler: str):
        import diffusers

        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{sampler}': choose one of {', '.join(SAMPLERS)}")
        cls = getattr(diffusers, SAMPLERS[sampler])
        return cls.from_config(self._base_scheduler_config)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if height % factor or width % factor:
            raise ConfigError(f"resolution {height}x{width} must be a multiple of {factor}")
        return (self.unet.config.in_channels, height // factor, width // factor)

    def initial_latents(self, seeds: list[int], settings: SamplerSettings, scheduler) -> torch.Tensor:
        shape = self.latent_shape(settings.height, settings.width)
        noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
        latents = torch.stack(noise).to(self.device, self.dtype)
        return latents * scheduler.init_noise_sigma

    def cfg_prediction(self, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor,
                       scheduler) -> CFGPrediction:
        """The one guided UNet call of the package (sampling, detectors and methods use it):
        the UNet batch is ``[uncond; cond]`` over the same latents."""
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        extra = {"added_cond_kwargs": self._added_conditions(latents)} if self.is_sdxl else {}
        out = self.unet(model_in, t, encoder_hidden_states=torch.cat([uncond, cond]), **extra).sample
        out_u, out_c = out.chunk(2)
        return CFGPrediction(out_u, out_c, model_in[: latents.shape[0]])

    def predict_noise(self, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor,
                      guidance: float, scheduler) -> torch.Tensor:
        """The guided prediction of one CFG step (in the UNet's own parametrisation)."""
        return self.cfg_prediction(latents, t, cond, uncond, scheduler).guided(guidance)

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """The model's own scheduler config (samplers and training schedules are built from it)."""
        return dict(self._base_scheduler_config)

    @property
    def prediction_type(self) -> str:
        """What the UNet outputs: "epsilon" (SD 1.x, the tiny world) or "v_prediction" (SD 2.x)."""
        return str(self._base_scheduler_config.get("prediction_type", "epsilon"))

    def to_epsilon(self, output: torch.Tensor, model_input: torch.Tensor, t, scheduler) -> torch.Tensor:
        """The UNet's output expressed as a noise prediction, so that detectors and methods
        measure the same quantity whatever the model regresses. ``model_input`` is what the
        UNet was given (after ``scheduler.scale_model_input``: the variance-preserving x_t,
        also for sigma-parametrised samplers such as Euler)."""
        kind = self.prediction_type
        if kind == "epsilon":
            return output
        a = scheduler.alphas_cumprod.to(output.device)[int(t)].to(output.dtype)
        if kind == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0  =>  eps = sqrt(a) v + sqrt(1-a) x_t
            return a.sqrt() * output + (1 - a).sqrt() * model_input
        raise ConfigError(f"unsupported prediction_type '{kind}' in the scheduler config")

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 images (B, H, W, 3); NonFiniteOutputError when latents or pixels hold NaN or
        Infinity (cast to uint8 they would become flat images that look like no copy)."""
        _check_finite(latents, "latents")
        scale = getattr(self.vae.config, "scaling_factor", 1.0)
        if self.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            # SDXL's VAE overflows in fp16: decode in fp32 as its own pipeline does
            images = self.vae.float().decode(latents.float() / scale).sample
            self.vae.to(self.dtype)
        else:
            images = self.vae.decode(latents / scale).sample
        _check_finite(images, "decoded pixels")
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()

    def sample_latents(self, prompts: list[str], seeds: list[int], settings: SamplerSettings,
                       method: SamplingHooks | None = None, max_steps: int | None = None) -> torch.Tensor:
        """Run the denoising loop (all steps, or the first ``max_steps``); return latents."""
        if len(prompts) != len(seeds):
            raise ValueError("prompts and seeds must have the same length")
        scheduler = self.make_scheduler(settings.sampler)
        scheduler.set_timesteps(settings.steps, device=self.device)
        latents = self.initial_latents(seeds, settings, scheduler)
        state = self.state
        state.begin(prompts, seeds, settings.steps)
        cond = self.encode_prompts(prompts)
        uncond = self.encode_prompts([""] * len(prompts))
        if method is not None:
            cond = method.prompt_embeds(self, cond, uncond, latents, settings, prompts)
            adjust = getattr(method, "adjust_initial_latents", None)  # optional for non-Method hooks objects
            if adjust is not None:
                latents = adjust(self, latents, cond, uncond, settings)
        combine = getattr(method, "combine_guidance", None) if method is not None else None
        try:
            with torch.no_grad():
                for i, t in enumerate(scheduler.timesteps):
                    if max_steps is not None and i >= max_steps:
                        break
                    state.step_index, state.timestep = i, int(t)
                    guidance = method.guidance_scale(i, settings.steps, settings.guidance) if method else settings.guidance
                    if combine is None:
                        eps = self.predict_noise(latents, t, cond, uncond, guidance, scheduler)
                    else:
                        eps = combine(self, i, t, self.cfg_prediction(latents, t, cond, uncond, scheduler), guidance)
                    latents = scheduler.step(eps, t, latents).prev_sample
                    if method is not None:
                        latents = method.on_step(self, i, t, latents)
        finally:
            state.end()
        return latents

    def generate(self, prompts: list[str], seeds: list[int], settings: SamplerSettings,
                 method: SamplingHooks | None = None) -> np.ndarray:
        """Images (B, H, W, 3) uint8 for ``prompts[i]`` with noise seed ``seeds[i]``."""
        if self.batch_invariant and len(prompts) > 1:
            return np.concatenate([self.generate([p], [s], settings, method) for p, s in zip(prompts, seeds)])
        return self.decode(self.sample_latents(prompts, seeds, settings, method))
