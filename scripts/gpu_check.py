"""GPU check of the pipeline adapter (run on a machine with CUDA; CI has none).

Generates the same prompts and seeds on CPU fp32 and on CUDA in fp16 and bf16, reports
the mean absolute pixel difference, checks that batch size does not change CUDA images
beyond rounding, and validates a weight-edit round trip on the GPU.
"""

import json
import sys
import time

import numpy as np
import torch

from memorybench.api.method import Method, apply_method
from memorybench.model.pipeline import PipelineAdapter, SamplerSettings


class HalveFFN(Method):
    name = "halve-ffn-check"
    kind = "weight-edit"

    def prepare(self, pipe, ctx):
        for _, block in pipe.transformer_blocks():
            w = block.ff.net[2].weight
            ctx.set_parameter(w, w * 0.5)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    s = SamplerSettings(steps=10, height=32, width=32)
    prompts = ["a red cat", "an old city street at night", "a photo of a boat", "a green tree"]
    seeds = [0, 1, 2, 3]
    ref = PipelineAdapter.dummy(seed=0).generate(prompts, seeds, s)
    report = {"gpu": torch.cuda.get_device_name(0)}
    for dtype in ("fp16", "bf16"):
        pipe = PipelineAdapter.dummy(seed=0, device="cuda")
        pipe.pipe.to(dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])
        pipe.dtype = pipe.pipe.unet.dtype
        t0 = time.perf_counter()
        batched = pipe.generate(prompts, seeds, s)
        report[f"{dtype}_seconds"] = round(time.perf_counter() - t0, 3)
        single = np.concatenate([pipe.generate([p], [k], s) for p, k in zip(prompts, seeds)])
        before = pipe.state_sha256()
        with apply_method(HalveFFN(), pipe):
            edited = pipe.generate(prompts, seeds, s)
        report[dtype] = {
            "mean_abs_diff_vs_cpu_fp32": float(np.abs(batched.astype(int) - ref.astype(int)).mean()),
            "max_abs_diff_batch_vs_single": int(np.abs(batched.astype(int) - single.astype(int)).max()),
            "weights_restored": pipe.state_sha256() == before,
            "edit_changed_images": bool((edited != batched).any()),
        }
    report["real_path"] = real_path_on_gpu()
    print(json.dumps(report, indent=2))
    ok = all(report[d]["weights_restored"] and report[d]["mean_abs_diff_vs_cpu_fp32"] < 3 for d in ("fp16", "bf16"))
    return 0 if ok else 1


def real_path_on_gpu() -> dict:
    """Full-size SD 1.5 and SDXL architectures (random weights) on the GPU at 512 px in fp16:
    the harness's overhead against bare diffusers, and SDXL generation. A few minutes."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_real_path import harness_overhead

    from memorybench.model.random_sd import build_random_sd

    out = {"sd15_overhead": harness_overhead("full", 512, 20, "cuda", "fp16", 3)}
    xl = PipelineAdapter(build_random_sd("sdxl", size="full"), "random-sdxl", "", device="cuda", dtype=torch.float16)
    t0 = time.perf_counter()
    images = xl.generate(["a photo of a cat", "a city at night"], [0, 1],
                         SamplerSettings(steps=20, height=512, width=512))
    torch.cuda.synchronize()
    out["sdxl_512px_20_steps"] = {"seconds": round(time.perf_counter() - t0, 2), "shape": list(images.shape),
                                  "finite_nonconstant": bool(images.std() > 0)}
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "real-path-gpu.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(main())
