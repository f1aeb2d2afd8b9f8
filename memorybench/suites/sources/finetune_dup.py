"""The ``finetune-dup`` data source: suites that fine-tune the model before generating.

Three fine-tuning sets, chosen by the suite option ``finetune_source``:

* ``tinyworld`` (suite finetune-dup-v1): the tiny world's ``build_finetune_data`` set, 8
  photo crops the shipped world never saw, each duplicated ``protected_dup`` times among
  1,000 fresh general pairs. Memorized prompts = the 8 protected captions (source = the
  protected image), general prompts = the world's held-out general captions. Retrieval
  searches the world's training images plus the fine-tuning images.
* ``world`` (suite tinyworld-defence-v1): the shipped world's own training set, continued:
  every training image and caption with the duplicate count the world was trained with;
  protected = the world's memorized images (all of them, calibration prompts included).
  Prompts, seeds, calibration split and ground truth are tinyworld-v1's (the ``tinyworld``
  data source), so numbers compare with tinyworld-v1 and tinyworld-robust-v1.
* ``folder`` (suite finetune-dup-sd-v1, the Imagenette experiment of Chavhan et al.): the user's
  image folder (``--data images=DIR``), ``protected_count`` images drawn with
  ``protected_seed`` and duplicated ``protected_dup`` times; captions from
  ``metadata.jsonl`` (``{"file_name": ..., "text": ...}`` per line) or a ``.txt`` beside
  each image. Images are resized and centre-cropped to the sampler's resolution.
  Memorized prompts = the protected captions (must be distinct), general prompts = the
  captions of other images; metrics ``webster-copy`` and ``clip-score`` read the ground
  truth from ``SuiteData.ground_truth`` / ``records`` as on the Webster suite.

Either way ``SuiteData.finetune_set`` holds the :class:`~memorybench.suites.finetune.FinetuneSet`
that :mod:`memorybench.finetune` trains on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memorybench.errors import ConfigError, DataError
from memorybench.suites.finetune import FinetuneSet
from memorybench.suites.spec import Suite
from memorybench.suites.data import SuiteData, TrainingImages, register_data_source

SOURCES = ("tinyworld", "world", "folder")
FOLDER_LAYOUT = ("images (*.png|*.jpg|*.jpeg|*.webp) with captions: metadata.jsonl lines "
                 '{"file_name": ..., "text": ...} or a .txt caption beside each image')


@register_data_source("finetune-dup", user_data=True)
def finetune_dup_data(suite: Suite, paths: dict[str, str]) -> SuiteData:
    """A fine-tuning set with duplicated (protected) images: built from the tiny world, or read from a folder."""
    source = suite.options.get("finetune_source", "tinyworld")
    if source in ("tinyworld", "world"):
        if paths:
            raise ConfigError(f"suite '{suite.name}' reads no local data: remove --data {', '.join(sorted(paths))}")
        return tinyworld_finetune_data(suite) if source == "tinyworld" else world_finetune_data(suite)
    if source == "folder":
        return folder_finetune_data(suite, paths)
    raise ConfigError(f"suite '{suite.name}': finetune_source must be one of {', '.join(SOURCES)}, got {source!r}")


# -- the tiny world ---------------------------------------------------------------------
def tinyworld_finetune_data(suite: Suite) -> SuiteData:
    from memorybench.datasets.tinyworld.generator import FINETUNE_DUP, build_finetune_data
    from memorybench.tinyworld import load_world_data

    world = load_world_data()
    ft = build_finetune_data(world.seed, protected_dup=int(suite.options.get("protected_dup", FINETUNE_DUP)),
                             data_version=world.data_version)
    n_prot = len(ft.protected_captions)
    mem_spec, gen_spec = suite.prompt_set("memorized"), suite.prompt_set("general")
    ft_set = FinetuneSet(images=ft.images, captions=ft.captions, dup_counts=ft.dup_counts,
                         protected=np.arange(n_prot), sha256=ft.sha256(),
                         description={"source": "tinyworld build_finetune_data", "seed": ft.seed,
                                      "protected": n_prot, "protected_dup": ft.protected_dup,
                                      "general_pairs": len(ft.general_captions)})
    # retrieval and calibration search everything the fine-tuned model was trained on
    offset = len(world.train_images)
    train_images = np.concatenate([world.train_images, ft.images])
    return SuiteData(
        prompts={"memorized": list(ft.protected_captions)[: mem_spec.limit],
                 "general": list(world.heldout_prompts)[: gen_spec.limit]},
        seeds={"memorized": mem_spec.seed_list(), "general": gen_spec.seed_list()},
        world=world, finetune_set=ft_set,
        training=TrainingImages(
            images=train_images, index={c: offset + i for i, c in enumerate(ft.protected_captions)},
            sha256=hashlib.sha256(f"{world.sha256()}|{ft.sha256()}".encode()).hexdigest()),
        heldout_images=dict(zip(world.heldout_prompts, world.heldout_images)),
        hashes={"tinyworld_data": world.sha256(), "finetune_data": ft.sha256()},
    )


# -- the shipped world's own training set ----------------------------------------------
WORLD_SET_TAG = "tinyworld-own-training-set-v1"


def world_finetune_set(world) -> FinetuneSet:
    """The world's training set as it was trained (images, captions, duplicate counts),
    its memorized images protected."""
    protected = np.asarray(world.memorized_indices, dtype=np.int64)
    sha = hashlib.sha256(json.dumps({"set": WORLD_SET_TAG, "world_data": world.sha256(),
                                     "protected": protected.tolist()}).encode()).hexdigest()
    dup = np.asarray(world.train_dup_counts, dtype=np.int64)
    return FinetuneSet(images=world.train_images, captions=list(world.train_captions), dup_counts=dup,
                       protected=protected, sha256=sha,
                       description={"source": "the shipped tiny world's own training set", "seed": world.seed,
                                    "images": len(world.train_captions), "samples": int(dup.sum()),
                                    "protected": int(len(protected)),
                                    "protected_dup": sorted({int(d) for d in dup[protected]})})


def world_finetune_data(suite: Suite) -> SuiteData:
    from dataclasses import replace

    from memorybench.suites.sources.tinyworld import tinyworld_data

    data = tinyworld_data(suite)  # tinyworld-v1's prompts, seeds, calibration split and ground truth
    ft_set = world_finetune_set(data.world)
    return replace(data, finetune_set=ft_set, hashes={**data.hashes, "finetune_data": ft_set.sha256})


# -- a local image folder (Stable Diffusion) --------------------------------------------
@dataclass(frozen=True)
class FolderRecord:
    """A prompt's ground truth, shaped like the Webster records the copy metric reads."""

    prompt: str
    laion_index: int  # row of the image in the fine-tuning set
    label: str | None = None


class FolderImages:
    """The folder's images, read and resized on demand (an SD-scale set does not fit in memory)."""

    def __init__(self, files: list[Path], height: int, width: int):
        self.files, self.height, self.width = files, height, width
        self.dtype = np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.height, self.width, 3)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, i: int) -> np.ndarray:
        from memorybench.realdata.gt_images import read_rgb, resize_center_crop

        return resize_center_crop(read_rgb(self.files[i]), self.height, self.width)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self._read(int(index))
        rows = range(len(self))[index] if isinstance(index, slice) else np.asarray(index).ravel()
        return np.stack([self._read(int(i)) for i in rows]) if len(rows) else np.zeros((0, *self.shape[1:]), np.uint8)

    def sha256(self, root: Path) -> str:
        from memorybench.core.hashing import sha256_file

        h = hashlib.sha256()
        for f in self.files:
            h.update(str(f.relative_to(root)).encode() + b"\0" + sha256_file(f).encode())
        return h.hexdigest()


class FolderGroundTruth:
    """Index -> image, with the interface the ``webster-copy`` metric reads."""

    def __init__(self, images: FolderImages, root: Path):
        self._images, self._root = images, root

    def images(self, index: int) -> list[np.ndarray]:
        return [self._images[int(index)]]

    def sha256(self, indices) -> str:
        from memorybench.core.hashing import sha256_file

        h = hashlib.sha256()
        for i in sorted(set(int(i) for i in indices)):
            f = self._images.files[i]
            h.update(str(f.relative_to(self._root)).encode() + b"\0" + sha256_file(f).encode())
        return h.hexdigest()


def read_caption_folder(root: Path) -> tuple[list[Path], list[str]]:
    """Image files (sorted by relative path) and their captions; ``DataError`` naming what is missing."""
    from memorybench.realdata.gt_images import IMAGE_EXTS

    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DataError(f"--data images: '{root}' holds no images (expected {FOLDER_LAYOUT})")
    meta = root / "metadata.jsonl"
    captions: dict[str, str] = {}
    if meta.is_file():
        for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                captions[str(rec["file_name"])] = str(rec["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"'{meta}' line {n}: expected {{\"file_name\": ..., \"text\": ...}} ({exc})") from None
    out = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        if rel in captions:
            out.append(captions[rel])
        elif f.with_suffix(".txt").is_file():
            out.append(f.with_suffix(".txt").read_text(encoding="utf-8").strip())
        else:
            raise DataError(f"--data images: no caption for '{rel}' in '{root}' (expected {FOLDER_LAYOUT})")
    return files, out


def folder_finetune_data(suite: Suite, paths: dict[str, str]) -> SuiteData:
    from memorybench.realdata.inputs import InputSpec, check_inputs
    from memorybench.realdata.metric_models import clip_input, sscd_input

    opts = suite.options
    specs = [InputSpec("images", "folder", f"the fine-tuning image folder: {FOLDER_LAYOUT}")]
    if "sscd_protocol" in opts:
        specs.append(sscd_input(opts["sscd_protocol"]))
    if "clip_arch" in opts:
        specs.append(clip_input(opts["clip_arch"]))
    inputs = check_inputs(suite.name, specs, paths)
    root = inputs["images"]
    files, captions = read_caption_folder(root)
    n_prot = int(opts.get("protected_count", 100))
    if not 0 < n_prot <= len(files):
        raise DataError(f"--data images: '{root}' holds {len(files)} images; suite '{suite.name}' protects "
                        f"{n_prot} (change it with --suite-option protected_count=N)")
    rng = np.random.default_rng(int(opts.get("protected_seed", 0)))
    protected = np.sort(rng.permutation(len(files))[:n_prot])
    prot_caps = [captions[i] for i in protected]
    if len(set(prot_caps)) != len(prot_caps):
        dup = next(c for c in prot_caps if prot_caps.count(c) > 1)
        raise DataError(f"--data images: protected images need distinct captions (each is a memorized prompt); "
                        f"'{dup}' captions several of them")
    s = suite.sampler
    images = FolderImages(files, s.height, s.width)
    dup_counts = np.ones(len(files), dtype=np.int64)
    dup_counts[protected] = int(opts.get("protected_dup", 50))
    images_sha = images.sha256(root)
    ft_sha = hashlib.sha256(json.dumps({"images": images_sha, "captions": captions, "protected": protected.tolist(),
                                        "dup": dup_counts.tolist(), "size": [s.height, s.width]}).encode()).hexdigest()
    ft_set = FinetuneSet(images=images, captions=captions, dup_counts=dup_counts, protected=protected,
                         sha256=ft_sha, description={"source": "folder", "images": len(files), "protected": n_prot,
                                                     "protected_dup": int(dup_counts[protected[0]])})
    mem_spec, gen_spec = suite.prompt_set("memorized"), suite.prompt_set("general")
    prot_set, prot_rows = set(prot_caps), set(protected.tolist())
    general: dict[str, int] = {}  # first image of each other caption
    for i, c in enumerate(captions):
        if i not in prot_rows and c not in prot_set and c not in general:
            general[c] = i
    records = {c: FolderRecord(c, int(i)) for c, i in zip(prot_caps, protected)}
    records.update({c: FolderRecord(c, i) for c, i in general.items()})
    return SuiteData(
        prompts={"memorized": prot_caps[: mem_spec.limit], "general": list(general)[: gen_spec.limit]},
        seeds={"memorized": mem_spec.seed_list(), "general": gen_spec.seed_list()},
        finetune_set=ft_set, inputs=inputs, ground_truth=FolderGroundTruth(images, root), records=records,
        hashes={"finetune_images": images_sha, "finetune_data": ft_sha},
    )


__all__ = ["finetune_dup_data", "tinyworld_finetune_data", "world_finetune_data", "world_finetune_set", "folder_finetune_data", "read_caption_folder"]
