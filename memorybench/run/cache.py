"""Content-addressed generation cache.

An image's address is the sha256 of everything that determines it: weights hash, method
name and config hash, prompt, seed, sampler, steps, guidance, resolution and dtype.
Images are lossless PNGs written atomically (temp file + rename), so a killed run leaves
either a whole image or none, and a resumed run regenerates only what is missing.
``manifest.jsonl`` records one line per image (appends of one short line are atomic, so
several processes can share a cache).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from memorybench.core.config import sha256_json
from memorybench.core.io import atomic_write_bytes


@dataclass(frozen=True)
class GenerationKey:
    weights_sha256: str
    method: str
    method_config_sha256: str
    prompt: str
    seed: int
    sampler: str
    steps: int
    guidance: float
    height: int
    width: int
    dtype: str

    def digest(self) -> str:
        return sha256_json(asdict(self))


def default_cache_dir() -> Path:
    root = os.environ.get("MEMORYBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "memorybench")
    return Path(root)


class GenerationCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.images_dir = self.root / "images"
        self.manifest = self.root / "manifest.jsonl"

    def path_for(self, key: GenerationKey) -> Path:
        digest = key.digest()
        return self.images_dir / digest[:2] / f"{digest}.png"

    def has(self, key: GenerationKey) -> bool:
        return self.path_for(key).is_file()

    def load(self, key: GenerationKey) -> np.ndarray:
        with Image.open(self.path_for(key)) as im:
            return np.asarray(im.convert("RGB")).copy()

    def store(self, key: GenerationKey, image: np.ndarray, seconds: float, **extra: Any) -> Path:
        import io

        path = self.path_for(key)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())
        record = {"digest": key.digest(), **asdict(key), "seconds": seconds, **extra}
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.manifest, "a", encoding="utf-8") as f:  # O_APPEND: one line, one write
            f.write(line)
            f.flush()
        return path

    def records(self) -> Iterator[dict[str, Any]]:
        """Manifest lines; a torn last line from a killed run is skipped."""
        if not self.manifest.is_file():
            return
        with open(self.manifest, encoding="utf-8") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def seconds_by_digest(self) -> dict[str, float]:
        return {r["digest"]: float(r.get("seconds", 0.0)) for r in self.records()}
