"""Hostile, malformed and huge inputs, and commands that could destroy data: every case ends in one
line of error (exit code 2 through the CLI) or a stated, safe handling, never in code running from a
file, a traceback, lost files or unbounded memory. Everything here is small and fast (default tier)."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch
import yaml
from helpers import noise_image, one_error_line, snapshot, tiny_overrides, write_coco, write_png_header

from detect_ft.utils.errors import DetectFTError

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(path, overrides: list[str]):
    sections: dict = {}
    for text in overrides:
        key, value = text.split("=", 1)
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(sections))
    return path


# ---------------------------------------------------------------- untrusted checkpoints never run code


def test_a_pickled_payload_is_refused_by_every_command_and_never_runs(payload_checkpoint, tiny_data, tmp_path, run_cli):
    evil, marker = payload_checkpoint
    config = _config(tmp_path / "c.yaml", tiny_overrides(tiny_data, tmp_path / "run"))
    image = next((tiny_data / "images").glob("*.jpg"))
    commands = [
        ("eval", config, "--weights", evil),
        ("export", evil, "--output", tmp_path / "m.onnx", "--no-verify"),
        ("predict", evil, image, "--output", tmp_path / "pred"),
        ("train", config, f"model.weights={evil}", "--no-progress"),
        ("train", config, f"train.resume={evil}", "--no-progress"),
    ]
    for argv in commands:
        code, _, err = run_cli(*argv)
        line = one_error_line(err)
        assert code == 2 and "refused to load" in line and str(evil) in line, (argv, err)
        assert "builtins.open" in line or "io.open" in line
        assert not marker.exists(), f"{argv[0]} ran code from the checkpoint"


def test_library_loaders_use_weights_only(payload_checkpoint):
    import numpy as np

    from detect_ft.checkpoint.training import load_checkpoint
    from detect_ft.models import load_detector
    from detect_ft.models.weights import read_weights_file

    evil, marker = payload_checkpoint
    loaders = (load_detector, load_checkpoint, lambda p: read_weights_file(p, "ssdlite320_mobilenet_v3_large"))
    for load in loaders:
        with pytest.raises(DetectFTError, match="refused to load"):
            load(evil)

    # NumPy arrays are allowed (earlier checkpoints hold one), but not as a way to smuggle objects in
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    hidden = evil.with_name("hidden.pt")
    torch.save({"model": {}, "rng": [{"numpy": np.array([Payload()], dtype=object)}], "epoch": 1}, hidden)
    for load in loaders:
        with pytest.raises(DetectFTError, match="refused to load"):
            load(hidden)
    assert not marker.exists()


def test_own_checkpoints_load_with_weights_only_and_carry_plain_rng_state(tmp_path):
    import numpy as np

    from detect_ft.checkpoint.training import rng_state, set_rng_state

    np.random.seed(3)
    state = rng_state()
    torch.save({"rng": [state]}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng"][0]
    expected = np.random.random(5)
    np.random.seed(99)
    set_rng_state(loaded)
    assert np.array_equal(np.random.random(5), expected)


def test_a_tampered_checkpoint_structure_is_one_line(tmp_path, run_cli):
    path = tmp_path / "odd.pt"
    torch.save(
        {
            "model": {"w": torch.zeros(1)},
            "model_name": "ssdlite320_mobilenet_v3_large",
            "num_classes": 1,
            "class_names": ["x"],
            "config": {"model": {"min_size": 10**9}},
        },
        path,
    )
    code, _, err = run_cli("export", path, "--output", tmp_path / "m.onnx", "--no-verify")
    assert code == 2 and "config.model.min_size" in one_error_line(err)
    torch.save([1, 2, 3], path)
    code, _, err = run_cli("export", path, "--output", tmp_path / "m.onnx", "--no-verify")
    assert code == 2 and "not a detect-ft checkpoint" in one_error_line(err)


# ---------------------------------------------------------------- files keep the user's permissions


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_get_the_users_umask(tmp_path, mask):
    from detect_ft.utils.atomic_io import torch_save_atomic, write_json_atomic, write_text_atomic

    before = os.umask(mask)
    try:
        torch_save_atomic({"w": torch.zeros(2)}, tmp_path / "c.pt")
        write_json_atomic(tmp_path / "m.json", {"a": 1})
        write_text_atomic(tmp_path / "deep" / "t.txt", "x")
    finally:
        os.umask(before)
    for name in ("c.pt", "m.json", "deep/t.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


# ---------------------------------------------------------------- a full disk keeps the old file


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    import resource
    import signal

    from detect_ft.utils.atomic_io import torch_save_atomic, write_json_atomic

    path = tmp_path / "last.pt"
    torch_save_atomic({"epoch": 1}, path)
    before = path.read_bytes()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(DetectFTError) as info:
            torch_save_atomic({"epoch": 2, "w": torch.zeros(100_000)}, path)
        with pytest.raises(DetectFTError, match="m.json"):
            write_json_atomic(tmp_path / "m.json", {"x": "y" * 200_000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "previous last.pt" in message
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "m.json").exists()


# ---------------------------------------------------------------- strict JSON


def test_json_writers_never_write_bare_nan(tmp_path):
    from detect_ft.utils.atomic_io import write_json_atomic

    write_json_atomic(tmp_path / "m.json", {"loss": float("nan"), "x": [float("inf"), 1.5]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {"loss": None, "x": [None, 1.5]}


# ---------------------------------------------------------------- train never writes over another run


def test_train_into_a_used_output_dir_starts_a_numbered_run(tiny_data, trained_run, tmp_path, run_cli):
    from detect_ft.config.schema import load_config
    from detect_ft.engine.trainer import train

    out = tmp_path / "run"
    config = _config(
        tmp_path / "c.yaml", tiny_overrides(tiny_data, out) + ["train.eval_interval=0", "train.max_iters_per_epoch=1"]
    )
    shutil.copytree(trained_run, out)  # a finished run of this config's model and data is in the way
    first = snapshot(out)
    assert "checkpoints/last.pt" in first

    code, printed, _ = run_cli("train", config, "--no-progress")
    assert code == 0 and f"this run writes to {tmp_path / 'run-2'}" in printed
    assert snapshot(out) == first  # the first run is untouched
    assert (tmp_path / "run-2" / "checkpoints" / "last.pt").is_file()
    saved = load_config(tmp_path / "run-2" / "config.yaml")
    assert saved.output.dir == str(tmp_path / "run-2") and saved.output.overwrite is False

    # an unrelated, non-empty folder is never written into either
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("my notes\n")
    run = train(load_config(config, [f"output.dir={tmp_path / 'mine'}"]), progress=False)
    assert run == tmp_path / "mine-2" and (tmp_path / "mine" / "config.yaml").read_text() == "my notes\n"


def test_resume_continues_and_overwrite_replaces_in_place(tiny_data, tmp_path, run_cli):
    out = tmp_path / "run"
    config = _config(tmp_path / "c.yaml", tiny_overrides(tiny_data, out) + ["train.max_iters_per_epoch=1"])
    assert run_cli("train", config, "--no-progress")[0] == 0
    assert run_cli("train", config, "train.epochs=2", "train.resume=auto", "--no-progress")[0] == 0
    assert not (tmp_path / "run-2").exists()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2

    (out / "notes.txt").write_text("keep me")
    code, printed, _ = run_cli("train", config, "output.overwrite=true", "train.eval_interval=0", "--no-progress")
    assert code == 0 and "output.overwrite=true: replacing the run" in printed and not (tmp_path / "run-2").exists()
    # best.pt of the replaced run is gone: best.pt and last.pt never come from different runs
    assert not (out / "checkpoints" / "best.pt").exists()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (out / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------- malformed, hostile or huge files


def _voc_with(root, xml_text: str):
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / "a.xml").write_text(xml_text)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    config = root / "c.yaml"
    config.write_text(f"data:\n  format: voc\n  root: {root}\n  train: train\n")
    return config


XML_BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<annotation><filename>a.jpg</filename><object><name>&lol4;</name></object></annotation>"""
XML_EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<annotation><filename>a.jpg</filename><object><name>&secret;</name></object></annotation>"""


@pytest.mark.parametrize("text", [XML_BOMB, XML_EXTERNAL], ids=["billion_laughs", "external_entity"])
def test_xml_with_entities_is_refused(tmp_path, run_cli, text):
    config = _voc_with(tmp_path, text)
    code, _, err = run_cli("check-data", config)
    assert code == 2 and "declares a DOCTYPE or entities" in one_error_line(err) and "a.xml" in err


def test_huge_files_are_refused_by_size_before_parsing(tmp_path, run_cli):
    config = _voc_with(tmp_path / "voc", "<annotation/>")
    with open(tmp_path / "voc" / "Annotations" / "a.xml", "wb") as f:
        f.truncate(64 << 20)  # sparse: no disk space, no memory
    code, _, err = run_cli("check-data", config)
    assert code == 2 and "over detect-ft's limit" in one_error_line(err)

    coco = tmp_path / "coco"
    coco.mkdir()
    with open(coco / "train.json", "wb") as f:
        f.truncate(3 << 30)
    (coco / "c.yaml").write_text(f"data:\n  format: coco\n  root: {coco}\n  train: train.json\n")
    code, _, err = run_cli("check-data", coco / "c.yaml")
    assert code == 2 and "train.json is 3.0 GiB, over detect-ft's limit" in one_error_line(err)

    big = tmp_path / "big.pt"
    with open(big, "wb") as f:
        f.truncate(17 << 30)
    code, _, err = run_cli("export", big, "--output", tmp_path / "m.onnx", "--no-verify")
    assert code == 2 and "over detect-ft's limit" in one_error_line(err)


def test_deeply_nested_json_and_yaml_are_one_line(tmp_path, run_cli):
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "train.json").write_text("[" * 200_000 + "]" * 200_000)
    (coco / "c.yaml").write_text(f"data:\n  format: coco\n  root: {coco}\n  train: train.json\n")
    code, _, err = run_cli("check-data", coco / "c.yaml")
    assert code == 2 and "nested too deeply" in one_error_line(err)

    yolo = tmp_path / "yolo"
    (yolo / "train" / "images").mkdir(parents=True)
    noise_image(yolo / "train" / "images" / "a.jpg")
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    (yolo / "data.yaml").write_text("\n".join(lines) + "\nnames: [*a8]\n")
    (yolo / "c.yaml").write_text(f"data:\n  format: yolo\n  root: {yolo}\n  train: train\n")
    code, _, err = run_cli("check-data", yolo / "c.yaml")
    assert code == 2 and "'names' must be a list of names" in one_error_line(err) and len(err) < 600


def test_images_beyond_the_pixel_limit_name_file_and_limit(tmp_path, run_cli):
    from detect_ft.data.image import read_image
    from detect_ft.utils.limits import MAX_IMAGE_PIXELS

    write_png_header(tmp_path / "huge.png", 20_000, 20_000)
    noise_image(tmp_path / "ok.png")
    write_coco(tmp_path, [("huge.png", 20_000, 20_000), ("ok.png", 64, 48)], {"ok.png": [[5, 5, 20, 20, "cat"]]})
    with pytest.raises(DetectFTError) as info:
        read_image(tmp_path / "huge.png")
    message = str(info.value)
    assert "huge.png" in message and "400.0 megapixels" in message and f"{MAX_IMAGE_PIXELS} pixels" in message
    (tmp_path / "c.yaml").write_text(f"data:\n  format: coco\n  root: {tmp_path}\n  train: train.json\n")
    code, out, _ = run_cli("check-data", tmp_path / "c.yaml")
    assert code == 1 and "unreadable_image" in out and "huge.png" in out and "beyond the decoder's limit" in out


def test_corrupt_checkpoint_is_one_line(tmp_path, run_cli):
    path = tmp_path / "cut.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    code, _, err = run_cli("export", path, "--output", tmp_path / "m.onnx", "--no-verify")
    assert code == 2 and "not a readable checkpoint" in one_error_line(err)


def _onnx_with_metadata(path, metadata: str):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"detect_ft": metadata})
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "metadata, expected",
    [
        ('{"format": 1, "class_names": "cat", "category_ids": [1]}', "class_names"),
        (
            '{"format": 1, "class_names": ["cat"], "category_ids": [1], "input": {"scale": "x"}, "outputs": []}',
            "input.scale",
        ),
        (
            '{"format": 1, "class_names": ["cat", "dog"], "category_ids": [1, 2], "input": {"scale": 0.5}, '
            '"outputs": ["b", "s", "l"], "thresholds": [0.5, 1.5]}',
            "thresholds.*2 confidences in \\[0, 1\\]",
        ),
        ("[" * 100_000 + "]" * 100_000, "not supported|not valid JSON"),
        ("{not json", "not valid JSON"),
    ],
    ids=["names", "scale", "thresholds", "nested", "syntax"],
)
def test_onnx_metadata_that_cannot_drive_the_runtime_is_one_line(tmp_path, run_cli, metadata, expected):
    import re

    model = _onnx_with_metadata(tmp_path / "m.onnx", metadata)
    code, _, err = run_cli("predict", model, noise_image(tmp_path / "a.jpg"), "--output", tmp_path / "out")
    assert code == 2 and re.search(expected, one_error_line(err))


# ---------------------------------------------------------------- no command destroys the user's files


def test_predict_never_writes_over_its_inputs(tmp_path):
    from detect_ft.api import Detector
    from detect_ft.inference.writer import write_predictions

    folder = tmp_path / "photos"
    for i in range(3):
        noise_image(folder / f"p{i}.jpg", seed=i)
    before = snapshot(folder)
    nothing = lambda images: [{"boxes": [], "scores": [], "labels": []} for _ in images]  # noqa: E731
    detector = Detector(predict_batch=nothing, model_name="test", class_names=["x"])
    sources = (
        (folder, folder),
        (folder / "p1.jpg", folder),
        (folder, tmp_path / "photos" / "."),
        ([folder / "p0.jpg", folder / "p1.jpg"], folder),
    )
    for source, output in sources:
        with pytest.raises(DetectFTError, match="overwrite") as info:
            write_predictions(detector.stream(source), source, output, save_format="coco")
        assert "p1.jpg" in str(info.value) and "choose another output folder" in str(info.value)
    assert snapshot(folder) == before
    summary = write_predictions(detector.stream(folder), folder, tmp_path / "out", save_format="voc")
    assert summary["images"] == 3 and snapshot(folder) == before


def _tiny_voc(root):
    for folder in ("Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(2):
        noise_image(root / "JPEGImages" / f"p{i}.jpg", seed=i)
        (root / "Annotations" / f"p{i}.xml").write_text(
            f"<annotation><filename>p{i}.jpg</filename><size><width>64</width><height>48</height></size><object>"
            "<name>cat</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>"
            "</annotation>"
        )
    (root / "ImageSets" / "Main" / "train.txt").write_text("p0\np1\n")
    return root


def test_convert_never_writes_into_its_source_annotations(tmp_path, run_cli):
    voc = _tiny_voc(tmp_path / "voc")
    before = snapshot(voc)
    code, _, err = run_cli("convert", "--from", "voc", "--to", "voc", "--root", voc, "--split", "train", "--out", voc)
    assert code == 2 and "is part of the source annotations" in one_error_line(err)
    assert snapshot(voc) == before

    assert (
        run_cli(
            "convert", "--from", "voc", "--to", "coco", "--root", voc, "--split", "train", "--out", tmp_path / "coco"
        )[0]
        == 0
    )
    coco_before = snapshot(tmp_path / "coco")
    code, _, err = run_cli(
        "convert",
        "--from",
        "coco",
        "--to",
        "coco",
        "--root",
        tmp_path / "coco",
        "--split",
        "train.json",
        "--out",
        tmp_path / "coco",
    )
    assert code == 2 and "train.json" in one_error_line(err) and snapshot(tmp_path / "coco") == coco_before


def test_convert_copies_only_image_files(tmp_path, run_cli):
    root = tmp_path / "data"
    noise_image(root / "a.jpg")
    (root / "secret.jpg").write_text("not an image, but named like one\n")
    (root / "notes.txt").write_text("private\n")
    for bad in ("secret.jpg", "notes.txt"):
        write_coco(root, [("a.jpg", 64, 48), (bad, 64, 48)], {"a.jpg": [[5, 5, 20, 20, "cat"]]})
        code, _, err = run_cli(
            "convert",
            "--from",
            "coco",
            "--to",
            "yolo",
            "--root",
            root,
            "--split",
            "train.json",
            "--out",
            tmp_path / "out",
        )
        assert code == 2 and bad in one_error_line(err) and "refused to copy" in err
        assert not (tmp_path / "out").exists()  # checked before anything is written
    # and images outside the dataset are not even read unless allowed
    outside = noise_image(tmp_path / "elsewhere.jpg")
    write_coco(root, [("a.jpg", 64, 48), (str(outside), 64, 48), ("../elsewhere.jpg", 64, 48)], {})
    code, printed, _ = run_cli(
        "convert", "--from", "coco", "--to", "yolo", "--root", root, "--split", "train.json", "--out", tmp_path / "out"
    )
    assert code == 0 and "2 box(es)/image(s) could not be converted" in printed and "outside_root" in printed
    assert sorted(p.name for p in (tmp_path / "out" / "train" / "images").iterdir()) == ["a.jpg"]


def test_eval_plots_never_replace_unrelated_files(tmp_path, run_cli):
    import numpy as np

    from detect_ft.data.records import DatasetRecords, ImageRecord
    from detect_ft.evaluation.plots import write_plots

    (tmp_path / "pr_curves.png").write_bytes(b"my own picture")
    records = DatasetRecords([ImageRecord("x.jpg", 64, 48, [[1, 1, 20, 20]], [1])], ["cat"])
    preds = [{"boxes": np.array([[1, 1, 20, 20]]), "scores": np.array([0.9]), "labels": np.array([1])}]
    with pytest.raises(DetectFTError, match="not written by detect-ft"):
        write_plots(records, preds, tmp_path)
    assert (tmp_path / "pr_curves.png").read_bytes() == b"my own picture"
    own = tmp_path / "own"
    write_plots(records, preds, own)
    write_plots(records, preds, own)  # its own plots are replaced

    config = _config(tmp_path / "c.yaml", ["data.format=coco", f"data.root={tmp_path}", "data.val=val.json"])
    code, _, err = run_cli("eval", config, "--weights", tmp_path / "any.pt", "--json", tmp_path / "m.json")
    assert code == 2 and "pr_curves.png" in one_error_line(err) and "--json" in err
    assert (tmp_path / "pr_curves.png").read_bytes() == b"my own picture"


ODD_VALUES = ["1e400", "-1e400", "nan", "inf", "", "abc", "0", "-5", "1" * 400]


def test_odd_values_in_annotations_never_end_in_a_traceback(tmp_path):
    from detect_ft.data.checks.doctor import check_split

    root = _voc_with(tmp_path / "voc", "<annotation/>").parent
    noise_image(root / "JPEGImages" / "a.jpg")
    good = {"width": "64", "height": "48", "xmin": "5", "ymin": "5", "xmax": "20", "ymax": "20", "name": "cat"}
    for field in good:
        for value in ODD_VALUES:
            v = {**good, field: value}
            (root / "Annotations" / "a.xml").write_text(
                f"<annotation><filename>a.jpg</filename><size><width>{v['width']}</width><height>{v['height']}"
                f"</height></size><object><name>{v['name']}</name><bndbox><xmin>{v['xmin']}</xmin><ymin>{v['ymin']}"
                f"</ymin><xmax>{v['xmax']}</xmax><ymax>{v['ymax']}</ymax></bndbox></object></annotation>"
            )
            try:
                check_split(format="voc", root=root, split="train")
            except DetectFTError:
                pass  # a one-line user error is a fine answer; anything else fails the test
    yolo = tmp_path / "yolo"
    noise_image(yolo / "train" / "images" / "a.jpg")
    (yolo / "train" / "labels").mkdir()
    (yolo / "classes.txt").write_text("cat\n")
    for position in range(5):
        for value in ODD_VALUES:
            tokens = ["0", "0.5", "0.5", "0.2", "0.2"]
            tokens[position] = value
            (yolo / "train" / "labels" / "a.txt").write_text(" ".join(tokens) + "\n")
            try:
                check_split(format="yolo", root=yolo, split="train")
            except DetectFTError:
                pass
