"""Real-data loaders (Webster-500, ground-truth folders, COCO), `data show`, the SD-scale
suites and their metrics, on small synthetic files written here (never the real files)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from memorybench.cli import main
from memorybench.errors import ConfigError, DataError, UnknownNameError
from memorybench.metrics.copy_aggregation import copy_aggregations, mad, median_with_ci
from memorybench.realdata.coco import read_coco_captions
from memorybench.realdata.gt_images import GroundTruthFolder
from memorybench.realdata.webster import NEMO_CSV, WEN_JSONL, read_webster
from memorybench.suites.data import SuiteData, load_suite_data
from memorybench.suites.spec import load_suite, with_options

HEADER = ";Caption;URL;type;mean_sscd;max_sscd;Index"
# (caption, LAION index, label): a ';' and doubled quotes inside captions, as in the real CSV
ROWS = [
    ("The No Limits Business Woman Podcast", 1030727993, "VM"),
    ('"Watch: Passion Pit\'s New Video, ""Lifted Up (1985)"""', 567947515, "TM"),
    ("Sunset; a painting by Anna", 12, "TM"),
]


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ';"\n') else text


def write_nemo(path: Path, rows=ROWS, bom=False, newline="\n", header=HEADER) -> Path:
    lines = [header] + [f"{i};{_csv_field(c)};http://x/{i}.jpg ;{lab};0.5;0.6;{idx}" for i, (c, idx, lab) in enumerate(rows)]
    path.write_bytes((("\ufeff" if bom else "") + newline.join(lines) + newline).encode())
    return path


def write_wen(path: Path, rows=ROWS, bom=False, newline="\n") -> Path:
    lines = [json.dumps({"caption": c, "index": idx, "url": f"http://x/{i}.jpg"}) + "  " for i, (c, idx, _) in enumerate(rows)]
    path.write_bytes((("\ufeff" if bom else "") + newline.join(lines) + newline + newline).encode())
    return path


# -- Webster loaders ------------------------------------------------------------------------
@pytest.mark.parametrize("bom,newline", [(False, "\n"), (True, "\r\n")])
def test_both_formats_read_the_same_prompts(tmp_path, bom, newline):
    nemo = read_webster(write_nemo(tmp_path / "labels.csv", bom=bom, newline=newline))
    wen = read_webster(write_wen(tmp_path / "prompts.jsonl", bom=bom, newline=newline))
    assert nemo.format == NEMO_CSV and wen.format == WEN_JSONL
    expected = [c for c, _, _ in ROWS]
    assert nemo.prompts == expected and wen.prompts == expected
    assert [r.laion_index for r in nemo.records] == [r.laion_index for r in wen.records] == [i for _, i, _ in ROWS]
    assert [r.label for r in nemo.records] == ["VM", "TM", "TM"] and not wen.has_labels
    assert nemo.label_counts() == {"VM": 1, "TM": 2} and wen.label_counts() == {}
    assert nemo.records[0].url == "http://x/0.jpg"  # trailing whitespace stripped
    assert [r.line for r in nemo.records] == [2, 3, 4] and [r.line for r in wen.records] == [1, 2, 3]
    assert nemo.sha256 == hashlib.sha256((tmp_path / "labels.csv").read_bytes()).hexdigest()


def test_detection_is_by_content_not_name(tmp_path):
    assert read_webster(write_nemo(tmp_path / "prompts.jsonl")).format == NEMO_CSV
    assert read_webster(write_wen(tmp_path / "labels.csv")).format == WEN_JSONL


def test_quoted_caption_spanning_lines_keeps_line_numbers(tmp_path):
    rows = [("first", 1, "VM"), ("two\nlines", 2, "TM"), ("third", 3, "TM")]
    f = read_webster(write_nemo(tmp_path / "m.csv", rows=rows))
    assert f.prompts == ["first", "two\nlines", "third"]
    assert [r.line for r in f.records] == [2, 3, 5]


@pytest.mark.parametrize("content,match", [
    ("", "no known Webster format"),
    ("caption,index,url\nhello,1,http://x\n", "no known Webster format"),
    ('{"caption": "a", "index": 1, "url": "u"}\n{"caption": "b", "index": 2\n', r"p\.txt:2: malformed JSON line"),
    ('{"caption": "a", "index": 1, "url": "u"}\n\n{"caption": "b", "url": "u"}\n', r"p\.txt:3: missing key\(s\) index"),
    ('{"caption": "a", "index": "12x", "url": "u"}\n', r"p\.txt:1: LAION index must be an integer"),
    ('{"caption": "  ", "index": 1, "url": "u"}\n', r"p\.txt:1: caption must be a non-empty string"),
    ('["caption", 1]\n', "no known Webster format"),
    ('{"caption": "a", "index": 1}\n{"caption": "a", "index": 2}\n', r"p\.txt:2: duplicate prompt \(first on line 1\)"),
    (HEADER + "\n0;a;u;VM;0.1;0.2;5\n1;b; c;u;TM;0.1;0.2;6\n", r"p\.txt:3: malformed row: 8 fields, the header has 7"),
    (HEADER + "\n0;a;u;VM;0.1;0.2;5\n1;b;u;XX;0.1;0.2;6\n", r"p\.txt:3: type must be one of VM, TM, got 'XX'"),
    (HEADER + "\n0;a;u;VM;0.1;0.2;five\n", r"p\.txt:2: LAION index must be an integer"),
    (HEADER + "\n", "holds no prompts"),
    (HEADER + '\n0;"abc"def;u;VM;0;0;1\n', r"p\.txt:2: malformed CSV row"),
    (HEADER + '\n0;a;u;VM;0;0;1\n1;"abc;u;VM;0;0;2\n2;b;u;TM;0;0;3\n', r"p\.txt:3: malformed CSV row \(unexpected end"),
])
def test_malformed_files_fail_with_file_and_line(tmp_path, content, match):
    path = tmp_path / "p.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        read_webster(path)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_webster(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is not a file"):
        read_webster(tmp_path)
    (tmp_path / "latin1.csv").write_bytes(HEADER.encode() + b"\n0;caf\xe9;u;VM;0;0;1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_webster(tmp_path / "latin1.csv")


# -- data show -----------------------------------------------------------------------------
def test_data_show_reports_format_counts_labels_and_hash(tmp_path, capsys):
    rows = [(f"prompt {i}", 100 + i, "VM" if i < 2 else "TM") for i in range(7)]
    path = write_nemo(tmp_path / "labels.csv", rows=rows, bom=True)
    assert main(["data", "show", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "format   nemo-csv" in out[1]
    assert "prompts  7" in out and "VM       2" in out and "TM       5" in out
    assert f"sha256   {hashlib.sha256(path.read_bytes()).hexdigest()}" in out
    assert main(["data", "show", str(write_wen(tmp_path / "p.jsonl", rows=rows))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "format   wen-jsonl" in out[1] and "prompts  7" in out
    assert not any(line.startswith(("VM", "TM")) for line in out)


def test_data_show_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n0;a;u;VM;0.1;0.2;5\n1;b;u;ZZ;0.1;0.2;6\n")
    assert main(["data", "show", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.csv:3" in err and "ZZ" in err
    assert main(["data", "show", str(tmp_path / "missing.csv")]) == 2


def test_data_show_reads_coco_captions(tmp_path, capsys):
    path = write_coco(tmp_path, n_images=5)[0]
    assert main(["data", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "coco-captions" in out and "images   5 with a caption" in out


# -- ground-truth folders -----------------------------------------------------------------------
def _save(path: Path, seed: int, size=(40, 48), fmt=None):
    from PIL import Image

    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.repeat(np.repeat(block, 8, 0), 8, 1)).save(path, format=fmt)
    return path


def test_gt_folder_reads_both_layouts_and_names_missing_index(tmp_path):
    root = tmp_path / "wen"
    _save(root / "gt_images" / "11" / "0.png", 1)
    _save(root / "gt_images" / "11" / "1.png", 2)
    _save(root / "gt_images" / "22.jpg", 3)
    (root / "gt_images" / "notes.txt").write_text("not an image")
    gt = GroundTruthFolder(root)  # the parent of gt_images/ works too
    assert gt.root == root / "gt_images" and len(gt) == 2 and 11 in gt and 22 in gt
    assert [p.name for p in gt.files(11)] == ["0.png", "1.png"]
    imgs = gt.images(11)
    assert len(imgs) == 2 and imgs[0].shape == (40, 48, 3) and imgs[0].dtype == np.uint8
    gt.check([11, 22])
    with pytest.raises(DataError, match=r"has no image for LAION index 33 \(and 1 more.*expected .*/33/\*\.png"):
        gt.check([11, 33, 44])
    before = gt.sha256([11])
    assert before == gt.sha256([11]) and before != gt.sha256([22])
    _save(root / "gt_images" / "11" / "1.png", 9)
    assert GroundTruthFolder(root).sha256([11]) != before
    with pytest.raises(DataError, match="does not exist"):
        GroundTruthFolder(tmp_path / "nothing")


# -- copy aggregations (known answers) ---------------------------------------------------------
def test_copy_aggregations_known_values():
    sims = [np.array([[0.9, 0.2], [0.1, 0.3], [0.4, 0.6]]),  # VM: per-gen max 0.9, 0.3, 0.6 -> max 0.9
            np.array([[0.2], [0.1]]),                          # TM: 0.2, 0.1 -> max 0.2
            np.array([[0.7], [0.8]])]                          # TM: 0.7, 0.8 -> max 0.8
    out = copy_aggregations(sims, ["VM", "TM", "TM"], "mem")
    assert out["sscd_mem"].value == pytest.approx((0.9 + 0.2 + 0.8) / 3)
    assert out["sscd_pergen_mem"].value == pytest.approx((0.9 + 0.3 + 0.6 + 0.2 + 0.1 + 0.7 + 0.8) / 7)
    assert out["copy_rate_mem"].value == pytest.approx(4 / 7)  # 0.9, 0.6, 0.7, 0.8 > 0.5
    assert out["sscd_median_mem"].value == pytest.approx(0.8)
    assert out["sscd_median_mem"].protocol["mad"] == pytest.approx(0.1)  # |0.9-0.8|, |0.2-0.8|, 0 -> median 0.1
    assert out["sscd_mem_vm"].value == pytest.approx(0.9) and out["sscd_mem_vm"].n == 1
    assert out["sscd_mem_tm"].value == pytest.approx(0.5) and out["sscd_mem_tm"].n == 2
    assert out["copy_rate_mem_tm"].value == pytest.approx(2 / 4)
    assert out["sscd_pergen_mem_vm"].value == pytest.approx(0.6)
    assert out["sscd_mem_vm"].ci_low is None  # one prompt: no CI
    lo, hi = out["sscd_mem"].ci_low, out["sscd_mem"].ci_high
    assert lo <= out["sscd_mem"].value <= hi
    assert out["sscd_mem"].protocol["split"] == "all" and out["sscd_mem_tm"].protocol["split"] == "TM"
    assert set(copy_aggregations(sims, None)) == {"sscd_mem", "sscd_pergen_mem", "copy_rate_mem", "sscd_median_mem"}
    assert copy_aggregations(sims, None, threshold=0.85)["copy_rate_mem"].value == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="non-finite"):
        copy_aggregations([np.array([[np.nan]])])


def test_median_ci_and_mad():
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    med, lo, hi = median_with_ci(v)
    assert med == 3.0 and lo <= med <= hi and hi <= 100.0
    assert mad(v) == 1.0


# -- suites ------------------------------------------------------------------------------------
def test_suites_load_hash_and_options():
    web, coco = load_suite("sd-webster500-v1"), load_suite("coco-quality")
    assert web.version == 2 and web.model == "folder" and web.data == "webster500"
    assert web.options["sscd_protocol"] == "default" and web.options["prompt_count"] == 500
    assert coco.options["n_captions"] == 30000 and coco.sampler.height == 512
    assert web.sha256() == load_suite("sd-webster500-v1").sha256() != coco.sha256()
    wen = with_options(web, {"sscd_protocol": "wen2024"})
    assert wen.options["sscd_protocol"] == "wen2024" and wen.sha256() != web.sha256()
    assert with_options(web, {}) is web
    with pytest.raises(ConfigError, match="has no option 'sscd_protcol'"):
        with_options(web, {"sscd_protcol": "wen2024"})
    with pytest.raises(ConfigError, match="option 'prompt_count' must be a int"):
        with_options(web, {"prompt_count": "many"})
    with pytest.raises(ConfigError, match="must be a float"):
        with_options(web, {"copy_threshold": True})
    assert with_options(web, {"copy_threshold": 1}).options["copy_threshold"] == 1.0


def _webster_paths(tmp_path, rows=ROWS):
    gt = tmp_path / "gt"
    for i, (_, idx, _) in enumerate(rows):
        _save(gt / f"{idx}.png", i)
    clip = Path(__file__).resolve().parents[1] / "datasets" / "tinyworld" / "world" / "clip"
    return {"prompts": str(write_nemo(tmp_path / "labels.csv", rows=rows)), "gt_images": str(gt),
            "clip_weights": str(clip)}


def _small_webster(**options):
    opts = {"prompt_count": len(ROWS), "clip_arch": "tinyworld", "calibration_prompts": 0, **options}
    return with_options(load_suite("sd-webster500-v1"), opts)


def test_webster_data_source_hashes_and_labels(tmp_path):
    paths = _webster_paths(tmp_path)
    data = load_suite_data(_small_webster(), paths)
    assert isinstance(data, SuiteData)
    assert data.prompts["memorized"] == [c for c, _, _ in ROWS] and data.seeds["memorized"] == list(range(10))
    assert data.hashes["prompts_file"] == hashlib.sha256(Path(paths["prompts"]).read_bytes()).hexdigest()
    assert data.hashes["gt_images"] == GroundTruthFolder(paths["gt_images"]).sha256([i for _, i, _ in ROWS])
    assert data.labels[ROWS[0][0]] == "VM" and data.prompt_file["labels"] == {"VM": 1, "TM": 2}


@pytest.mark.parametrize("change,error,match", [
    (lambda p: p.pop("prompts"), DataError, "needs --data prompts=PATH: the Webster-500 prompt file"),
    (lambda p: p.pop("gt_images"), DataError, "needs --data gt_images=PATH: the ground-truth training images"),
    (lambda p: p.pop("clip_weights"), DataError, "needs --data clip_weights=PATH: the tiny world's clip/ folder"),
    (lambda p: p.update(prompt="x"), ConfigError, "takes no --data prompt; its inputs: prompts, general_prompts, gt_images"),
    (lambda p: p.update(gt_images="/no/such/folder"), DataError, "--data gt_images: '/no/such/folder' does not exist"),
    (lambda p: p.update(prompts=p["gt_images"]), DataError, "--data prompts: .* is not a file"),
    (lambda p: (Path(p["gt_images"]) / "12.png").unlink(), DataError,
     r"gt_images folder '.*' has no image for LAION index 12 \(expected .*/12/\*\.png or .*/12\.png\|\.jpg\)"),
])
def test_webster_missing_data_errors(tmp_path, change, error, match):
    paths = _webster_paths(tmp_path)
    change(paths)
    with pytest.raises(error, match=match):
        load_suite_data(_small_webster(), paths)


def test_webster_preset_and_count_checks(tmp_path):
    paths = _webster_paths(tmp_path)
    with pytest.raises(DataError, match="holds 3 prompts; suite 'sd-webster500-v1' expects 500.*prompt_count=3"):
        load_suite_data(with_options(load_suite("sd-webster500-v1"), {"clip_arch": "tinyworld"}), paths)
    with pytest.raises(DataError, match="needs --data sscd_model=PATH: the official SSCD TorchScript file "
                                        "sscd_disc_large.torchscript.pt that sscd_protocol 'wen2024' uses"):
        load_suite_data(_small_webster(sscd_protocol="wen2024"), paths)
    with pytest.raises(UnknownNameError, match="unknown SSCD protocol 'wen2025'"):
        load_suite_data(_small_webster(sscd_protocol="wen2025"), paths)
    with pytest.raises(ConfigError, match="attack_preset 'tinyworld' calibrates on the tiny world"):
        load_suite_data(_small_webster(attack_preset="tinyworld"), paths)
    with pytest.raises(ConfigError, match="reads no local data: remove --data prompts"):
        load_suite_data(load_suite("smoke-v1"), {"prompts": paths["prompts"]})


# -- end to end: sd-webster500-v1 on a stand-in SD folder ------------------------------------------
WORLD = Path(__file__).resolve().parents[1] / "datasets" / "tinyworld" / "world"
SMALL_SAMPLER = {"sampler": "ddim", "steps": 2, "guidance": 7.5, "height": 64, "width": 64}


def _small_suite_file(tmp_path, name, seeds):
    from importlib import resources

    spec = yaml.safe_load((resources.files("memorybench") / "suites" / f"{name}.yaml").read_text())
    spec["sampler"] = SMALL_SAMPLER
    spec["prompt_sets"][0]["seeds"] = seeds
    path = tmp_path / f"{name}-small.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_webster_suite_end_to_end_with_a_copied_ground_truth(tmp_path):
    """Prompt 0's ground truth IS its seed-0 generation (known answer: SSCD max = 1); the
    others get unrelated images. Run through the CLI with both file formats."""
    from PIL import Image

    from memorybench.model.pipeline import PipelineAdapter, SamplerSettings

    # the runner makes all 9 images in one batch, in (prompt, seed) order: make the same batch
    pipe = PipelineAdapter.from_folder(WORLD / "pipeline")
    jobs = [(c, seed) for c, _, _ in ROWS for seed in range(3)]
    copy = pipe.generate([p for p, _ in jobs], [s for _, s in jobs], SamplerSettings(**SMALL_SAMPLER))[0]
    paths = _webster_paths(tmp_path)
    (Path(paths["gt_images"]) / f"{ROWS[0][1]}.png").unlink()
    (Path(paths["gt_images"]) / str(ROWS[0][1])).mkdir()
    Image.fromarray(copy).save(Path(paths["gt_images"]) / str(ROWS[0][1]) / "0.png")  # Wen's layout
    _save(Path(paths["gt_images"]) / str(ROWS[0][1]) / "1.png", 7)  # a second, unrelated ground truth
    suite_file = _small_suite_file(tmp_path, "sd-webster500-v1", seeds=3)
    common = ["run", "--suite", str(suite_file), "--method", "none", "--model", str(WORLD / "pipeline"),
              "--cache-dir", str(tmp_path / "cache"), "--batch-size", "9", "--no-progress",
              "--suite-option", "prompt_count=3", "--suite-option", "clip_arch=tinyworld", "--suite-option", "calibration_prompts=0",
              "--data", f"gt_images={paths['gt_images']}", "--data", f"clip_weights={paths['clip_weights']}"]
    assert main(common + ["--data", f"prompts={paths['prompts']}", "--output", str(tmp_path / "csv.json")]) == 0
    wen = write_wen(tmp_path / "prompts.jsonl")
    assert main(common + ["--data", f"prompts={wen}", "--output", str(tmp_path / "wen.json")]) == 0
    csv_res = json.loads((tmp_path / "csv.json").read_text())
    wen_res = json.loads((tmp_path / "wen.json").read_text())

    m = csv_res["metrics"]
    assert m["sscd_mem_vm"]["value"] > 0.999  # the exact copy is among generations x ground truths
    assert m["sscd_mem_tm"]["value"] < 0.9 and m["sscd_mem_tm"]["n"] == 2
    assert m["sscd_pergen_mem_vm"]["value"] < m["sscd_mem_vm"]["value"]
    assert m["copy_rate_mem_vm"]["value"] >= 1 / 3
    assert m["sscd_mem"]["protocol"]["sscd_protocol"] == "default"
    assert m["sscd_mem"]["protocol"]["paper_aggregation"].startswith("sscd_mem (mean over prompts")
    assert set(csv_res["summary"]) == set(load_suite("sd-webster500-v1").summary)
    assert {"clip_mem_vm", "clip_mem_tm", "extraction_flagged_vm", "extraction_verified_tm"} <= set(m)
    assert -1 <= m["clip_mem"]["value"] <= 1 and "tinyworld-clip" in m["clip_mem"]["implementation"]
    trace = csv_res["calibration"]["webster_copy"]["per_prompt"]["memorized"]
    assert trace[0]["laion_index"] == ROWS[0][1] and trace[0]["n_ground_truth"] == 2 and trace[0]["max_sscd"] > 0.99
    data = csv_res["suite"]["data"]
    assert data["prompts_file"] == hashlib.sha256(Path(paths["prompts"]).read_bytes()).hexdigest()
    assert data["gt_images"] == GroundTruthFolder(paths["gt_images"]).sha256([i for _, i, _ in ROWS])
    assert csv_res["provenance"]["suite_options"] == {"prompt_count": 3, "clip_arch": "tinyworld", "calibration_prompts": 0}
    assert csv_res["suite"]["sha256"] == with_options(load_suite(str(suite_file)),
                                                      {"prompt_count": 3, "clip_arch": "tinyworld", "calibration_prompts": 0}).sha256()
    assert not any(str(tmp_path) in json.dumps(v) for v in (csv_res["suite"], csv_res["model"]))

    # the JSONL run reuses the same images (same prompts and seeds) and has no VM/TM columns
    assert wen_res["cost"]["images_generated"] == 0
    assert wen_res["summary"]["sscd_mem"] == csv_res["summary"]["sscd_mem"]
    assert not any(k.endswith(("_vm", "_tm")) for k in wen_res["metrics"])
    assert wen_res["suite"]["data"]["prompts_file"] != data["prompts_file"]


def test_webster_run_without_model_folder_is_one_line(tmp_path, capsys):
    paths = _webster_paths(tmp_path)
    args = ["run", "--suite", "sd-webster500-v1", "--method", "none", "--suite-option", "prompt_count=3", "--suite-option", "calibration_prompts=0",
            "--suite-option", "clip_arch=tinyworld", "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    args += [a for k, v in paths.items() for a in ("--data", f"{k}={v}")]
    assert main(args) == 2
    assert "needs a model folder: pass --model PATH" in capsys.readouterr().err
    assert main(args[:-2] + ["--data", "gt_images"]) == 2
    assert "--data expects KEY=PATH" in capsys.readouterr().err


def test_extraction_plugin_flags_and_verifies_a_copied_ground_truth(tmp_path):
    import types

    from memorybench.api.metric import RunView
    from memorybench.metrics.plugins.webster_extraction import WebsterExtraction
    from memorybench.realdata.gt_images import read_rgb
    from memorybench.realdata.webster import WebsterRecord

    gt_dir = tmp_path / "gt"
    _save(gt_dir / "1.png", 1, size=(64, 64))
    _save(gt_dir / "2.png", 2, size=(96, 80))
    gt = GroundTruthFolder(gt_dir)
    copy = read_rgb(gt_dir / "1.png")
    noise = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    records = {"copied": WebsterRecord("copied", 1, "", "VM", 2), "novel": WebsterRecord("novel", 2, "", "TM", 3)}
    run = RunView(suite=types.SimpleNamespace(name="t", options={"attack_preset": "chavhan2024", "sscd_protocol": "default"}),
                  data=SuiteData(prompts={}, seeds={}, ground_truth=gt, records=records),
                  images={"memorized": {"copied": np.stack([copy] * 3), "novel": noise}}, progress=False)
    out = WebsterExtraction().compute(run)
    assert out["extraction_flagged"].value == 0.5 and out["extraction_verified"].value == 0.5
    assert out["extraction_flagged_vm"].value == 1.0 and out["extraction_verified_vm"].value == 1.0
    assert out["extraction_flagged_tm"].value == 0.0
    first = run.calibration["webster_extraction"]["prompts"][0]
    assert first["source_l2"] == pytest.approx(0.0, abs=1e-6) and first["source_sscd"] > 0.99


def test_copy_plugin_uses_the_preset_checkpoint_file(tmp_path):
    """sscd_protocol wen2024 loads the TorchScript file the user passes (a tiny random one
    here) and names the preset; a generation equal to its ground truth scores 1."""
    import types
    import warnings

    import torch

    from memorybench.api.metric import RunView
    from memorybench.metrics.plugins.webster_copy import WebsterCopy
    from memorybench.realdata.gt_images import read_rgb
    from memorybench.realdata.webster import WebsterRecord

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                              torch.nn.Flatten(), torch.nn.Linear(256, 512))
    with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; SSCD ships as TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net).save(str(tmp_path / "sscd_disc_large.torchscript.pt"))
    _save(tmp_path / "gt" / "5" / "0.png", 1, size=(256, 256))
    _save(tmp_path / "gt" / "6.png", 2, size=(256, 256))
    gt = GroundTruthFolder(tmp_path / "gt")
    same = read_rgb(tmp_path / "gt" / "5" / "0.png")
    other = np.random.default_rng(3).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    records = {"a": WebsterRecord("a", 5, "", "VM", 2), "b": WebsterRecord("b", 6, "", "TM", 3)}
    run = RunView(suite=types.SimpleNamespace(name="t", options={"sscd_protocol": "wen2024", "copy_threshold": 0.5}),
                  data=SuiteData(prompts={}, seeds={}, ground_truth=gt, records=records, inputs={
                      "sscd_model": tmp_path / "sscd_disc_large.torchscript.pt"}),
                  images={"memorized": {"a": np.stack([other[0], same]), "b": other}}, progress=False)
    out = WebsterCopy().compute(run)
    assert out["sscd_mem_vm"].value == pytest.approx(1.0, abs=1e-5)
    assert out["sscd_mem"].protocol["sscd_protocol"] == "wen2024"
    assert "torchscript-disc_large/sscd_disc_large.torchscript.pt@sha256:" in out["sscd_mem"].implementation
    assert out["sscd_mem"].protocol["paper_aggregation"].startswith("sscd_pergen_mem")
    assert out["sscd_pergen_mem_vm"].value < 1.0 and run.calibration["webster_copy"]["sscd_protocol"] == "wen2024"


def test_clip_plugin_averages_per_prompt_then_per_label(monkeypatch):
    import types

    import memorybench.realdata.metric_models as metric_models
    from memorybench.api.metric import RunView
    from memorybench.metrics.plugins.clip_score import ClipScore

    class MeanPixelScorer:  # a stand-in CLIP whose score is known: mean pixel / 255
        implementation = "stub"

        def score(self, images, captions):
            assert len(images) == len(captions)
            return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3)) / 255.0

        def protocol_dict(self):
            return {"model": "stub"}

    monkeypatch.setattr(metric_models, "clip_from", lambda run: MeanPixelScorer())
    img = lambda v: np.full((8, 8, 3), v, dtype=np.uint8)  # noqa: E731
    images = {"memorized": {"a": np.stack([img(255), img(0)]),       # prompt mean 0.5
                            "b": np.stack([img(51), img(51)]),       # 0.2
                            "c": np.stack([img(102), img(204)])}}    # 0.6
    run = RunView(suite=types.SimpleNamespace(name="t", options={}), images=images, progress=False,
                  data=SuiteData(prompts={}, seeds={}, labels={"a": "VM", "b": "TM", "c": "TM"}))
    out = ClipScore().compute(run)
    assert out["clip_mem"].value == pytest.approx((0.5 + 0.2 + 0.6) / 3) and out["clip_mem"].n == 3
    assert out["clip_mem_vm"].value == pytest.approx(0.5) and out["clip_mem_tm"].value == pytest.approx(0.4)
    assert out["clip_mem"].higher_is_better and out["clip_mem_tm"].protocol["split"] == "TM"


# -- COCO ------------------------------------------------------------------------------------
def write_coco(tmp_path, n_images=6):
    images_dir = tmp_path / "val2014"
    images, anns = [], []
    for k in range(n_images):
        name = f"COCO_val2014_{k + 40:012d}.jpg"
        _save(images_dir / name, 100 + k, size=(48, 64), fmt="JPEG")
        images.append({"id": k + 40, "file_name": name})
        anns.append({"id": 2 * k + 1, "image_id": k + 40, "caption": f"A  photo of\nthing {k}. "})
        anns.append({"id": 2 * k, "image_id": k + 40, "caption": "a duplicate caption" if k < 2 else f"thing {k} again"})
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": anns}))
    return path, images_dir


def test_coco_captions_choice_is_seeded_and_distinct(tmp_path):
    path, _ = write_coco(tmp_path)
    coco = read_coco_captions(path)
    assert len(coco.pairs) == 6 and coco.pairs[0].caption == "a duplicate caption"  # lowest annotation id
    assert coco.pairs[2].caption == "thing 2 again"
    a, b = coco.choose(5, seed=0), coco.choose(5, seed=0)
    assert a == b and len({c.caption for c in a}) == 5
    assert [c.image_id for c in coco.choose(5, seed=1)] != [c.image_id for c in a]
    with pytest.raises(DataError, match="has 5 images with distinct captions; the suite asks for 6"):
        coco.choose(6, seed=0)


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    ('{"images": []}', "no 'images' and 'annotations' lists"),
    ('{"images": [{"id": 1}], "annotations": []}', r"images\[0\] needs an integer 'id' and a string 'file_name'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}',
     "refers to image_id 2"),
])
def test_coco_malformed_json(tmp_path, content, match):
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(DataError, match=match):
        read_coco_captions(tmp_path / "c.json")


def _coco_suite(n=4, **options):
    return with_options(load_suite("coco-quality"), {"n_captions": n, "fid_extractor": "tinyclip",
                                                     "clip_arch": "tinyworld", **options})


def test_coco_missing_data_errors(tmp_path):
    path, images_dir = write_coco(tmp_path)
    paths = {"captions": str(path), "images": str(images_dir), "fid_weights": str(WORLD / "clip"),
             "clip_weights": str(WORLD / "clip")}
    data = load_suite_data(_coco_suite(), paths)
    assert len(data.prompts["general"]) == 4 and data.seeds["general"] == [0]
    assert data.hashes["captions_file"] == hashlib.sha256(path.read_bytes()).hexdigest()
    chosen = data.reference_ids
    (images_dir / f"COCO_val2014_{chosen[1]:012d}.jpg").unlink()
    with pytest.raises(DataError, match=rf"COCO image folder '.*' has no COCO_val2014_{chosen[1]:012d}\.jpg "
                                        rf"\(image id {chosen[1]} in the captions JSON\)"):
        load_suite_data(_coco_suite(), paths)
    with pytest.raises(DataError, match="needs --data fid_weights=PATH: torch-fidelity's Inception weights"):
        load_suite_data(_coco_suite(fid_extractor="inception"), {k: v for k, v in paths.items() if k != "fid_weights"})
    with pytest.raises(ConfigError, match="unknown fid_extractor 'clip'"):
        load_suite_data(_coco_suite(fid_extractor="clip"), paths)


def test_coco_suite_end_to_end(tmp_path):
    path, images_dir = write_coco(tmp_path, n_images=6)
    suite_file = _small_suite_file(tmp_path, "coco-quality", seeds=1)
    args = ["run", "--suite", str(suite_file), "--method", "none", "--model", str(WORLD / "pipeline"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--output", str(tmp_path / "r.json"),
            "--suite-option", "n_captions=5", "--suite-option", "fid_extractor=tinyclip",
            "--suite-option", "clip_arch=tinyworld", "--data", f"captions={path}", "--data", f"images={images_dir}",
            "--data", f"fid_weights={WORLD / 'clip'}", "--data", f"clip_weights={WORLD / 'clip'}"]
    assert main(args) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res["summary"]) == {"fid_gen", "kid_gen", "clip_gen"}
    m = res["metrics"]
    assert m["fid_gen"]["n"] == 5 and m["fid_gen"]["protocol"]["n_ref"] == 5
    assert m["kid_gen"]["protocol"]["kid_subset_size"] == 5
    assert "tiny-CLIP" in m["fid_gen"]["protocol"]["label"]
    assert np.isfinite(res["summary"]["fid_gen"]) and m["clip_gen"]["n"] == 5
    assert res["suite"]["data"]["captions_file"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(res["calibration"]["coco_fid"]["image_ids"]) == 5
