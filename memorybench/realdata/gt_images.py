"""Ground-truth training images keyed by LAION index, from a local folder.

The LAION URLs behind Webster-500 are largely dead, so users bring the images they hold.
Two layouts are read (both may be mixed in one folder):

* Wen et al.'s: ``gt_images/{index}/*.png`` (one folder per prompt, possibly several
  images: the duplicates of that training image);
* flat: ``{index}.png`` / ``{index}.jpg`` / ``.jpeg`` / ``.webp``.

The folder given may also be the parent of ``gt_images/`` (where Wen's zip unpacks).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from memorybench.errors import DataError
from memorybench.core.hashing import sha256_file

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
EXPECTED_LAYOUT = "gt_images/{index}/*.png or {index}.png|.jpg"


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) pixels of an image file (``DataError`` when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(f"corrupt or unreadable image {path}: {type(exc).__name__}: {exc}") from None


def check_image_header(path: Path) -> None:
    """``DataError`` unless the file starts like an image PIL can read (header only: cheap)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 (the header is parsed on open)
    except Exception as exc:
        raise DataError(f"'{path}' in the gt_images folder is not an image ({type(exc).__name__}: {exc})") from None


def resize_center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shorter-side bicubic resize then centre crop to (height, width): puts a ground-truth
    image on the generations' pixel grid for pixel distances (tiled L2)."""
    from PIL import Image

    im = Image.fromarray(image)
    w, h = im.size
    s = max(height / h, width / w)
    nw, nh = max(width, round(w * s)), max(height, round(h * s))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - width) // 2, (nh - height) // 2
    return np.asarray(im.crop((left, top, left + width, top + height)), dtype=np.uint8)


class GroundTruthFolder:
    """Index -> image files of a local ground-truth folder (see the module doc)."""

    def __init__(self, path: str | Path):
        root = Path(path).expanduser()
        if not root.is_dir():
            raise DataError(f"gt_images folder '{root}' does not exist (it must hold one image per LAION index: "
                            f"{EXPECTED_LAYOUT})")
        if (root / "gt_images").is_dir():
            root = root / "gt_images"
        self.root = root
        self._files: dict[int, list[Path]] = {}
        for entry in root.iterdir():
            if entry.is_dir() and entry.name.isdigit():
                files = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
                if files:
                    self._files.setdefault(int(entry.name), []).extend(files)
            elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTS and entry.stem.isdigit():
                self._files.setdefault(int(entry.stem), []).append(entry)
        for files in self._files.values():
            files.sort()

    def __contains__(self, index: int) -> bool:
        return index in self._files

    def __len__(self) -> int:
        return len(self._files)

    def files(self, index: int) -> list[Path]:
        if index not in self._files:
            raise DataError(self._missing_message([index]))
        return list(self._files[index])

    def check(self, indices: Iterable[int]) -> None:
        """Fail with one line when any index has no image."""
        missing = [i for i in dict.fromkeys(indices) if i not in self._files]
        if missing:
            raise DataError(self._missing_message(missing))

    def _missing_message(self, missing: list[int]) -> str:
        first = missing[0]
        more = f" (and {len(missing) - 1} more of the prompts' indices)" if len(missing) > 1 else ""
        return (f"gt_images folder '{self.root}' has no image for LAION index {first}{more} "
                f"(expected {self.root}/{first}/*.png or {self.root}/{first}.png|.jpg)")

    def images(self, index: int) -> list[np.ndarray]:
        return [read_rgb(p) for p in self.files(index)]

    def sha256(self, indices: Iterable[int]) -> str:
        """Content hash of the images of ``indices`` (relative names and bytes): the files a
        run used, so unrelated files in the folder do not change it."""
        h = hashlib.sha256()
        for index in sorted(set(indices)):
            for f in self.files(index):
                check_image_header(f)  # a text file named .png fails here, before any model loads
                h.update(str(f.relative_to(self.root)).encode() + b"\0")
                h.update(sha256_file(f).encode())
        return h.hexdigest()


__all__ = ["GroundTruthFolder", "read_rgb", "resize_center_crop", "IMAGE_EXTS"]
