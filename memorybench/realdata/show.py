"""``memorybench data show FILE``: what a data file holds, so a user can check it before a
long run (format, prompt count, prompts per label, sha256)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from memorybench.errors import DataError


def _is_coco_json(path: Path) -> bool:
    """COCO captions files are one JSON object with 'images'/'annotations' (on one line or
    pretty-printed); Wen's JSONL has one small object per line with 'caption'."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8-sig", errors="replace").lstrip()
    if not head.startswith("{"):
        return False
    first = head.splitlines()[0]
    try:
        obj = json.loads(first)
        return isinstance(obj, dict) and ("annotations" in obj or "images" in obj)
    except json.JSONDecodeError:  # pretty-printed or a very long line: look at the first keys
        return '"caption"' not in first and any(k in head for k in ('"annotations"', '"images"', '"info"'))


def describe_data_file(path: str | Path) -> list[str]:
    """Lines describing a Webster-500 prompt file or a COCO captions JSON."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist (expected a Webster-500 prompt file or a COCO captions JSON)")
    if _is_coco_json(path):
        from memorybench.realdata.coco import read_coco_captions

        coco = read_coco_captions(path)
        return [f"file     {path}", "format   coco-captions (COCO captions JSON: images + annotations)",
                f"images   {len(coco.pairs)} with a caption",
                f"prompts  {len({p.caption for p in coco.pairs})} distinct (one caption per image)",
                f"sha256   {coco.sha256}"]
    from memorybench.realdata.webster import FORMAT_DESCRIPTIONS, read_webster

    wf = read_webster(path)
    lines = [f"file     {path}", f"format   {wf.format} ({FORMAT_DESCRIPTIONS[wf.format]})",
             f"prompts  {len(wf.records)}"]
    counts = wf.label_counts()
    if counts:
        lines += [f"{label:<8} {n}" for label, n in counts.items()]
    else:
        lines.append("labels   none (this format has no VM/TM labels)")
    indices = Counter(r.laion_index for r in wf.records)
    repeated = sum(1 for n in indices.values() if n > 1)
    lines.append(f"indices  {len(indices)} distinct LAION indices" + (f" ({repeated} shared by several prompts)"
                                                                     if repeated else ""))
    lines.append(f"sha256   {wf.sha256}")
    return lines


__all__ = ["describe_data_file"]
