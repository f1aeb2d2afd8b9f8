"""Content-addressed generation cache.

An image's address is the sha256 of everything that determines it: weights hash, method
name and config hash, prompt, seed, sampler, steps, guidance, resolution and dtype.
Images are lossless PNGs written atomically (temp file + rename), so a killed run leaves
either a whole image or none, and a resumed run regenerates only what is missing.
``manifest.jsonl`` records one line per image, appended under the manifest's lock, so
several processes can share a cache.

The cache does not trust its files: beside each image lies ``<image>.sha256``, the hash of
its bytes, and every read checks it. An image that is truncated, empty or has a flipped byte
is reported on stderr (naming the file), removed and generated again. The same check guards
the other cached files (SSCD embeddings, fine-tuned weights) through
``memorybench.core.io.write_checked`` and ``read_checked``. An image from an older cache
without a hash beside it is used when it decodes whole (and its hash recorded then).

Runs sharing a cache claim the batches they make: before a missing batch is generated, its
claim (an advisory lock on ``claims/<batch>.lock``) is taken without waiting. A batch claimed
by another process is put aside and the run goes on with the others; at the end it waits for
each put-aside claim, looks in the cache again and makes only what is still missing (the
other process may have died: the operating system releases its claims). Two runs started
together on one cache therefore generate each image once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from memorybench.core.config import sha256_json
from memorybench.core.io import file_lock, loads_strict, read_checked, warn, write_checked
from memorybench.errors import DataError


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:
        return False


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
        """Whether a whole, unchanged image is cached (a damaged one is discarded: False)."""
        return read_checked(self.path_for(key), "image", whole=_decodes) is not None

    def load(self, key: GenerationKey) -> np.ndarray:
        path = self.path_for(key)
        data = read_checked(path, "image", whole=_decodes)
        if data is None:
            raise DataError(f"cached image '{path}' is missing or was damaged after this run checked it: "
                            "rerun the same command to make it again")
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB")).copy()

    def store(self, key: GenerationKey, image: np.ndarray, seconds: float, **extra: Any) -> Path:
        path = self.path_for(key)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
        png_sha256 = write_checked(path, buf.getvalue())
        record = {"digest": key.digest(), **asdict(key), "seconds": seconds, "png_sha256": png_sha256, **extra}
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        with file_lock(self.manifest), open(self.manifest, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        return path

    def claim_path(self, keys: list[GenerationKey]) -> Path:
        """The claim file of a batch: named by the hash of its images' addresses, in order."""
        digest = sha256_json([k.digest() for k in keys])
        return self.root / "claims" / digest[:2] / f"{digest}.lock"

    @contextlib.contextmanager
    def claim(self, keys: list[GenerationKey], wait: bool) -> Iterator[bool]:
        """Hold the claim on a batch while making it; yields whether this process holds it.

        ``wait=False`` never waits: it yields False when another process holds the claim.
        ``wait=True`` waits as long as the holder lives (it is making these images; a process
        that dies releases its claims), saying once on stderr that it waits. Claims are
        advisory locks released when the block ends; the empty claim files stay (removing a
        lock file that others may be waiting on would let two processes hold it).
        """
        from filelock import FileLock, Timeout

        path = self.claim_path(keys)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=0, poll_interval=0.05)
        try:
            lock.acquire()
        except Timeout:
            if not wait:
                yield False
                return
            warn(f"another run is making a batch of these images (claim file '{path}'): waiting for it")
            lock.acquire(timeout=-1)
        try:
            yield True
        finally:
            lock.release()

    def records(self) -> Iterator[dict[str, Any]]:
        """Manifest lines; a torn or malformed line (a run killed mid-write) is skipped."""
        if not self.manifest.is_file():
            return
        with open(self.manifest, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = loads_strict(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(record, dict) and isinstance(record.get("digest"), str):
                    yield record

    def seconds_by_digest(self) -> dict[str, float]:
        out = {}
        for r in self.records():
            seconds = r.get("seconds", 0.0)
            if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
                out[r["digest"]] = float(seconds)
        return out
