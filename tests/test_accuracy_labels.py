"""Top-1 / top-5 against the labels of a user's own image folder (one sub-folder per class).

The model is fixed and tiny: a 1x1 conv with identity weights, global average pooling and
flatten, so its logit c is the mean of input channel c after the model's preprocessing, and its
top-1 is the colour channel (0 red, 1 green, 2 blue) that dominates the photo. The photos and the
folders they are put in are chosen so that the expected top-1 is known by hand:

    photo        dominant channel (normalised mean, margin to the runner-up >= 0.22)
    astronaut    0    chelsea  0    coffee  0    retina  0
    camera       2    moon     2    rocket  2    coins   2    clock  2
"""
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.accuracy import compare, eval_data, output_classes
from harness.config import AccuracyConfig, ModelConfig
from harness.data import labeled_images, load_photo
from harness.errors import ConfigError, HarnessError
from harness.frontends import load_model
from harness.models import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from tests.conftest import run_cli

# sorted folder names are the classes 0, 1, 2; the photos in each, with their known top-1
FOLDERS = {
    "a_red": {"astronaut": 0, "chelsea": 0, "coffee": 0, "camera": 2},
    "b_green": {"retina": 0, "moon": 2},
    "c_blue": {"rocket": 2, "coins": 2, "clock": 2},
}
SPEC = ModelSpec("rgb_tiny", 32, "test model", mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=3)


def _count(class_of_folder):
    """By hand: photos whose dominant channel is the class their folder stands for."""
    return sum(top1 == class_of_folder[folder] for folder, photos in FOLDERS.items() for top1 in photos.values())


def _write_folder(root, folders=FOLDERS):
    from PIL import Image

    for folder, photos in folders.items():
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for name in photos:
            Image.fromarray(np.asarray(load_photo(name))).save(os.path.join(root, folder, f"{name}.png"))
    return root


def _rgb_model(path):
    w = numpy_helper.from_array(np.eye(3, dtype="float32").reshape(3, 3, 1, 1), "w")
    nodes = [helper.make_node("Conv", ["data", "w"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["out"])]
    graph = helper.make_graph(nodes, "rgb", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(str(tmp_path_factory.mktemp("labeled")))


def _channel_means(x):
    return x.reshape(len(x), 3, -1).mean(2)


def test_sorted_folders_are_the_classes(folder):
    data = eval_data(AccuracyConfig(dataset="images", path=folder), SPEC, (1, 3, 32, 32), num_classes=3)
    assert data.name == f"images {folder} (9, 3 classes)"
    # round the classes: a_red's first, b_green's first, c_blue's first, then the second of each...
    assert data.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 2, 0]
    m = compare(_channel_means(data.inputs), _channel_means(data.inputs), data.labels)
    assert m["top1_fp32"] == pytest.approx(_count({"a_red": 0, "b_green": 1, "c_blue": 2}) / 9) == 6 / 9
    assert m["top5_fp32"] == 1.0  # three classes: every label is in the top 5


def test_labels_file_and_synsets_file(folder, tmp_path):
    labels = tmp_path / "labels.yaml"
    labels.write_text("a_red: 0\nb_green: 2\nc_blue: 2\n")
    data = eval_data(AccuracyConfig(dataset="images", path=folder, labels=str(labels)), SPEC, (1, 3, 32, 32), 3)
    top1 = compare(_channel_means(data.inputs), _channel_means(data.inputs), data.labels)["top1_fp32"]
    assert top1 == pytest.approx(_count({"a_red": 0, "b_green": 2, "c_blue": 2}) / 9) == pytest.approx(7 / 9)

    synsets = tmp_path / "synsets.txt"
    synsets.write_text("c_blue a blue thing\nb_green\na_red\n")  # line i: class i, first word the folder
    data = eval_data(AccuracyConfig(dataset="images", path=folder, synsets=str(synsets)), SPEC, (1, 3, 32, 32), 3)
    top1 = compare(_channel_means(data.inputs), _channel_means(data.inputs), data.labels)["top1_fp32"]
    assert top1 == pytest.approx(_count({"a_red": 2, "b_green": 1, "c_blue": 0}) / 9) == pytest.approx(1 / 9)


def test_num_samples_goes_round_the_classes(folder):
    images = labeled_images(folder, num_samples=4)
    assert [os.path.basename(f) for f in images.files] == ["astronaut.png", "moon.png", "clock.png", "camera.png"]
    assert images.labels.tolist() == [0, 1, 2, 0]


def test_empty_class_folder(tmp_path):
    root = _write_folder(str(tmp_path / "d"), {"a": {"astronaut": 0}, "c": {"rocket": 2}})
    os.makedirs(os.path.join(root, "b"))
    with pytest.raises(ConfigError, match=r"^accuracy.path: class folder .*/d/b holds no images \(looked for \.jpg"):
        eval_data(AccuracyConfig(dataset="images", path=root), SPEC, (1, 3, 32, 32), 3)


def test_unreadable_image(tmp_path):
    root = _write_folder(str(tmp_path / "d"), {"a": {"astronaut": 0}, "b": {"rocket": 2}})
    with open(os.path.join(root, "b", "broken.jpg"), "wb") as f:
        f.write(b"not a jpeg at all")
    with pytest.raises(HarnessError, match=r"^cannot read image .*/d/b/broken.jpg: cannot identify image file"):
        eval_data(AccuracyConfig(dataset="images", path=root), SPEC, (1, 3, 32, 32), 3)


def test_label_file_naming_a_class_the_model_lacks(folder, tmp_path):
    labels = tmp_path / "labels.yaml"
    labels.write_text("a_red: 0\nb_green: 1\nc_blue: 3\n")
    with pytest.raises(ConfigError, match=r"^accuracy.labels: .*labels.yaml gives class 'c_blue' the index 3; "
                                          r"the model has 3 classes \(0..2\)$"):
        eval_data(AccuracyConfig(dataset="images", path=folder, labels=str(labels)), SPEC, (1, 3, 32, 32), 3)
    labels.write_text("a_red: 0\nc_blue: 2\n")
    with pytest.raises(ConfigError, match=r"^accuracy.labels: .* has no class index for the folder 'b_green'"):
        eval_data(AccuracyConfig(dataset="images", path=folder, labels=str(labels)), SPEC, (1, 3, 32, 32), 3)
    with pytest.raises(ConfigError, match=r"^accuracy.path: .* has 3 class folders but the model has 2 classes"):
        eval_data(AccuracyConfig(dataset="images", path=folder), SPEC, (1, 3, 32, 32), 2)


def _config(tmp_path, folder, extra=""):
    model = _rgb_model(str(tmp_path / "rgb.onnx"))
    cfg = tmp_path / "rgb.yaml"
    cfg.write_text(f"""model: {{name: rgb_tiny, frontend: onnx, onnx: {model}, input_shape: [1, 3, 32, 32]}}
target: llvm
quantize:
  calibrate_mode: max
  skip_conv_layers: []
  calib: {{source: images, path: {folder}, num_samples: 9}}
accuracy: {{dataset: images, path: {folder}{extra}}}
bench: {{number: 1, repeat: 1, min_repeat_ms: 0, results_dir: {tmp_path}}}
""")
    return str(cfg)


def test_top1_of_fp32_and_int8_against_labels(folder, tmp_path):
    """`harness run` on the labeled folder: fp32 and int8 top-1 both equal the count by hand (6 of 9)."""
    cfg = _config(tmp_path, folder)
    assert output_classes(load_model(ModelConfig(name="rgb_tiny", frontend="onnx", onnx=str(tmp_path / "rgb.onnx"),
                                                 input_shape=[1, 3, 32, 32])).mod) == 3
    r = run_cli("run", cfg, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "top1 fp32  top1 int8  top5 fp32  top5 int8" in r.stdout
    rec = json.load(open(r.stdout.strip().splitlines()[-1].split("record: ")[1]))
    acc = rec["accuracy"]
    assert acc["dataset"] == f"images {folder} (9, 3 classes)" and acc["samples"] == 9
    assert acc["top1_fp32"] == acc["top1_int8"] == pytest.approx(6 / 9)
    assert acc["top5_fp32"] == acc["top5_int8"] == 1.0
    assert rec["variants"][1]["quantized_ops"] == 1


def test_bad_label_file_fails_before_building(folder, tmp_path):
    labels = tmp_path / "labels.yaml"
    labels.write_text("a_red: 0\nb_green: 1\nc_blue: 7\n")
    r = run_cli("run", _config(tmp_path, folder, f", labels: {labels}"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (f"error: accuracy.labels: {labels} gives class 'c_blue' the index 7; "
                                                 "the model has 3 classes (0..2)")
    assert "compiling" not in r.stderr  # checked before any build
