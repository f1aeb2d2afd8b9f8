"""COCO captions and their images, from a local captions JSON and image folder.

The captions file is COCO's ``captions_val2014.json``: ``images`` (``id``, ``file_name``)
and ``annotations`` (``image_id``, ``caption``). A run uses ``n`` (caption, image) pairs
chosen reproducibly: one caption per image (the annotation with the lowest id), images
in a ``numpy.random.default_rng(seed)`` permutation of their ids, skipping a caption
already taken (a prompt keys its generations, so prompts must be distinct), until ``n``.
The chosen images are the FID/KID reference set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memorybench.errors import DataError
from memorybench.core.hashing import sha256_file
from memorybench.metrics.fid import ImageFolder

EXPECTED_JSON = ("a COCO captions JSON (e.g. captions_val2014.json) with 'images' (id, file_name) and "
                 "'annotations' (image_id, caption)")


@dataclass(frozen=True)
class CocoCaption:
    caption: str
    image_id: int
    file_name: str


@dataclass(frozen=True)
class CocoCaptions:
    path: Path
    pairs: tuple[CocoCaption, ...]  # one caption per image, image ids ascending
    sha256: str  # of the JSON file

    def choose(self, n: int, seed: int) -> list[CocoCaption]:
        """``n`` pairs with distinct captions, chosen reproducibly by ``seed``."""
        if n < 1:
            raise DataError(f"the number of COCO captions must be >= 1, got {n}")
        order = np.random.default_rng(seed).permutation(len(self.pairs))
        chosen: list[CocoCaption] = []
        taken: set[str] = set()
        for i in order:
            pair = self.pairs[int(i)]
            if pair.caption not in taken:
                taken.add(pair.caption)
                chosen.append(pair)
                if len(chosen) == n:
                    return chosen
        raise DataError(f"'{self.path}' has {len(chosen)} images with distinct captions; the suite asks for {n} "
                        "(pass --suite-option n_captions=N with a smaller N)")


def _fail(path: Path, what: str) -> DataError:
    return DataError(f"COCO captions file '{path}': {what} (expected {EXPECTED_JSON})")


def read_coco_captions(path: str | Path) -> CocoCaptions:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"COCO captions file '{path}' does not exist (expected {EXPECTED_JSON})")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise _fail(path, "no 'images' and 'annotations' lists")
    files: dict[int, str] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise _fail(path, f"images[{k}] needs an integer 'id' and a string 'file_name', got {im!r:.80}")
        files[im["id"]] = im["file_name"]
    first: dict[int, tuple[int, str]] = {}  # image id -> (annotation order key, caption)
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), int) \
                or not isinstance(ann.get("caption"), str):
            raise _fail(path, f"annotations[{k}] needs an integer 'image_id' and a string 'caption', got {ann!r:.80}")
        if ann["image_id"] not in files:
            raise _fail(path, f"annotations[{k}] refers to image_id {ann['image_id']}, which 'images' does not list")
        caption = " ".join(ann["caption"].split())  # COCO captions carry stray newlines and double spaces
        if not caption:
            continue
        key = ann.get("id", k) if isinstance(ann.get("id", k), int) else k
        if ann["image_id"] not in first or key < first[ann["image_id"]][0]:
            first[ann["image_id"]] = (key, caption)
    if not first:
        raise _fail(path, "no captions")
    pairs = tuple(CocoCaption(first[i][1], i, files[i]) for i in sorted(first))
    return CocoCaptions(path, pairs, sha256_file(path))


def image_paths(folder: str | Path, pairs: list[CocoCaption]) -> list[Path]:
    """The image file of every pair (``DataError`` naming the first one missing)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"COCO image folder '{root}' does not exist (it must hold the images named by the "
                        "captions JSON's file_name, e.g. COCO_val2014_000000000042.jpg)")
    paths = [root / p.file_name for p in pairs]
    missing = [(p, f) for p, f in zip(pairs, paths) if not f.is_file()]
    if missing:
        pair, f = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"COCO image folder '{root}' has no {pair.file_name} (image id {pair.image_id} in the "
                        f"captions JSON){more}")
    return paths


class CocoImages(ImageFolder):
    """The chosen COCO images as a torch-fidelity reference set (``ImageFolder``'s reading,
    resizing and content hash, over an explicit file list instead of a folder scan)."""

    def __init__(self, root: Path, files: list[Path], resolution: int | None):
        self.root = Path(root)
        self.files = list(files)
        self.resolution = resolution
        self._size = None
        self._sha = None


__all__ = ["CocoCaption", "CocoCaptions", "read_coco_captions", "image_paths", "CocoImages"]
