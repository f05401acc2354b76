"""Tests of harness.data: calibration / evaluation data sources and their errors."""

import numpy as np
import pytest
from PIL import Image

from harness.data import (
    CROP_FRACTION, CalibSpec, calibration_arrays, calibration_batches, load_photo, load_photos, photo_names,
    photo_views, preprocess_image,
)
from harness.errors import ConfigError, HarnessError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SHAPE = (1, 3, 32, 32)


def _batches(spec, shape=SHAPE, **kw):
    kw.setdefault("mean", MEAN)
    kw.setdefault("std", STD)
    return list(calibration_batches(spec, input_name="data", input_shape=shape, **kw))


def _raises(exc_type, start, fn):
    with pytest.raises(exc_type) as info:
        fn()
    msg = str(info.value)
    assert msg.startswith(start), msg
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_resize_rule_and_centre_crop():
    # 256 = 224 / 0.875: an image whose short side is already 256 is only cropped.
    assert round(224 / CROP_FRACTION) == 256
    img = np.random.RandomState(0).randint(0, 256, size=(256, 300, 3), dtype=np.uint8)
    out = preprocess_image(img, 224, MEAN, STD)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    top, left = (256 - 224) // 2, (300 - 224) // 2
    want = (img[top:top + 224, left:left + 224] / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out, want.transpose(2, 0, 1), atol=1e-5)


def test_preprocess_keeps_geometry_and_gray_to_rgb():
    # left half black, right half white, twice as wide as high: the edge stays in the middle
    img = np.zeros((100, 200), dtype=np.uint8)
    img[:, 100:] = 255
    out = preprocess_image(img, 32, MEAN, STD)
    assert out.shape == (3, 32, 32)
    black = (0 - np.array(MEAN)) / np.array(STD)
    white = (1 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out[:, :, :15], np.broadcast_to(black[:, None, None], (3, 32, 15)), atol=1e-5)
    np.testing.assert_allclose(out[:, :, 17:], np.broadcast_to(white[:, None, None], (3, 32, 15)), atol=1e-5)
    # one-channel output (luminance)
    assert preprocess_image(img, 16, (0.5,), (0.25,)).shape == (1, 16, 16)


# ----------------------------------------------------------------------------- images


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    Image.new("RGB", (120, 90), (200, 100, 50)).save(d / "a_solid.png")
    rng = np.random.RandomState(1)
    Image.fromarray(rng.randint(0, 256, (64, 48, 3), dtype=np.uint8)).save(d / "b_noise.bmp")
    Image.fromarray(np.full((40, 40), 77, np.uint8), mode="L").save(d / "sub" / "c_gray.PNG")
    Image.new("RGBA", (50, 70), (10, 20, 30, 128)).save(d / "sub" / "d_rgba.png")
    (d / "notes.txt").write_text("not an image")
    return d


def test_images_folder_shapes_and_values(image_dir):
    spec = CalibSpec("images", str(image_dir), num_samples=10, batch_size=3)
    batches = _batches(spec, image_size=32)
    assert [b["data"].shape for b in batches] == [(3, 3, 32, 32), (1, 3, 32, 32)]  # 4 images found
    assert all(b["data"].dtype == np.float32 for b in batches)
    x = np.concatenate([b["data"] for b in batches])
    # sorted recursively: a_solid, b_noise, sub/c_gray, sub/d_rgba
    solid = (np.array([200, 100, 50]) / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(x[0, :, 5, 7], solid, atol=1e-5)
    np.testing.assert_allclose(x[0].reshape(3, -1).std(axis=1), 0, atol=1e-5)
    assert x[1].std() > 0.5
    gray = (77 / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(x[2, :, 0, 0], gray, atol=1e-5)
    np.testing.assert_allclose(x[3, :, 10, 10], (np.array([10, 20, 30]) / 255.0 - MEAN) / STD, atol=1e-5)


def test_images_num_samples_limits_and_progress(image_dir):
    calls = []
    spec = CalibSpec("images", str(image_dir), num_samples=2, batch_size=8)
    x = calibration_arrays(spec, input_shape=SHAPE, mean=MEAN, std=STD, progress=lambda d, t: calls.append((d, t)))
    assert x.shape == (2, 3, 32, 32)
    assert calls == [(2, 2)]


# ----------------------------------------------------------------------------- npy / npz


def test_npy_file_batches_and_truncation(tmp_path):
    arr = np.random.RandomState(0).normal(size=(10, 3, 8, 8))  # float64: cast to float32
    np.save(tmp_path / "calib.npy", arr)
    spec = CalibSpec("npy", str(tmp_path / "calib.npy"), num_samples=100, batch_size=4)
    batches = _batches(spec, shape=(1, 3, 8, 8))
    assert [b["data"].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0]["data"].dtype == np.float32
    np.testing.assert_allclose(np.concatenate([b["data"] for b in batches]), arr.astype(np.float32))
    spec = CalibSpec("npy", str(tmp_path / "calib.npy"), num_samples=6, batch_size=4)
    assert calibration_arrays(spec, input_shape=(1, 3, 8, 8)).shape == (6, 3, 8, 8)


def test_npz_picks_input_name_else_first(tmp_path):
    a = np.ones((2, 1, 4, 4), np.float32)
    b = np.full((3, 1, 4, 4), 2.0, np.float32)
    np.savez(tmp_path / "named.npz", other=a, data=b)
    np.savez(tmp_path / "first.npz", x=a, y=b)
    x = calibration_arrays(CalibSpec("npy", str(tmp_path / "named.npz")), input_shape=(1, 1, 4, 4))
    assert x.shape == (3, 1, 4, 4) and (x == 2).all()
    x = calibration_arrays(CalibSpec("npy", str(tmp_path / "first.npz")), input_shape=(1, 1, 4, 4))
    assert x.shape == (2, 1, 4, 4) and (x == 1).all()


def test_npy_folder_concatenates_sorted(tmp_path):
    np.save(tmp_path / "b.npy", np.full((1, 4, 4), 2.0, np.float32))  # one sample, no batch axis
    np.save(tmp_path / "a.npy", np.full((3, 1, 4, 4), 1.0, np.float32))
    x = calibration_arrays(CalibSpec("npy", str(tmp_path), batch_size=3), input_shape=(1, 1, 4, 4))
    assert x.shape == (4, 1, 4, 4)
    assert x[:3].max() == 1 and x[3].min() == 2


# ----------------------------------------------------------------------------- synthetic / photos


def test_synthetic_seeded_and_batch_size_independent():
    def get(seed, bs, n=10):
        return calibration_arrays(CalibSpec("synthetic", num_samples=n, batch_size=bs, seed=seed), input_shape=SHAPE)

    x = get(0, 4)
    assert x.shape == (10, 3, 32, 32) and x.dtype == np.float32
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    np.testing.assert_array_equal(x, get(0, 4))
    np.testing.assert_array_equal(x, get(0, 3))
    assert not np.array_equal(x, get(1, 4))
    sizes = [b["data"].shape[0] for b in _batches(CalibSpec("synthetic", num_samples=10, batch_size=4))]
    assert sizes == [4, 4, 2]


def test_photos_are_real_images():
    names = photo_names()
    assert {"astronaut", "chelsea", "coffee", "camera"} <= set(names)
    x = load_photos(32, MEAN, STD)
    assert x.shape == (len(names), 3, 32, 32) and x.dtype == np.float32
    assert (x.reshape(len(names), -1).std(axis=1) > 0.1).all()  # none constant
    calib = calibration_arrays(CalibSpec("photos", num_samples=len(names) + 4, batch_size=8),
                               input_shape=SHAPE, mean=MEAN, std=STD, image_size=32)
    assert calib.shape == (len(names) + 4, 3, 32, 32)
    np.testing.assert_array_equal(calib[:len(names)], x)  # un-augmented first, same order
    for i in range(4):  # then augmented views (flips) of the same photos
        assert not np.allclose(calib[len(names) + i], x[i])
        flipped = preprocess_image(load_photo(names[i])[:, ::-1], 32, MEAN, STD)
        np.testing.assert_array_equal(calib[len(names) + i], flipped)
    views = photo_views(400, seed=3)
    assert views == photo_views(400, seed=3) and len(set(map(repr, views))) == 400


# ----------------------------------------------------------------------------- errors


def test_error_wrong_shape_and_dtype(tmp_path):
    np.save(tmp_path / "mnist.npy", np.zeros((4, 1, 28, 28), np.float32))
    spec = CalibSpec("npy", str(tmp_path / "mnist.npy"))
    _raises(HarnessError, "calibration data has shape (4,1,28,28), the model input is (1,3,224,224)",
            lambda: calibration_batches(spec, input_name="data", input_shape=(1, 3, 224, 224)))
    np.save(tmp_path / "ints.npy", np.zeros((4, 3, 8, 8), np.int64))
    spec = CalibSpec("npy", str(tmp_path / "ints.npy"))
    _raises(HarnessError, "calibration data has dtype int64, the model input is float32",
            lambda: calibration_batches(spec, input_name="data", input_shape=(1, 3, 8, 8)))


def test_error_missing_path_and_empty_folder(tmp_path):
    missing = str(tmp_path / "nope")
    for source in ("npy", "images"):
        _raises(ConfigError, f"calibration data path {missing} does not exist",
                lambda: calibration_batches(CalibSpec(source, missing), input_name="data", input_shape=SHAPE))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    _raises(HarnessError, f"no images found in {empty} (looked for .jpg, .jpeg, .png",
            lambda: calibration_batches(CalibSpec("images", str(empty)), input_name="data", input_shape=SHAPE))
    _raises(HarnessError, f"no .npy files found in {empty}",
            lambda: calibration_batches(CalibSpec("npy", str(empty)), input_name="data", input_shape=SHAPE))


def test_error_unreadable_image(tmp_path):
    Image.new("RGB", (40, 40), (1, 2, 3)).save(tmp_path / "a.png")
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"this is not a jpeg")
    msg = _raises(HarnessError, f"cannot read image {bad}: ",
                  lambda: _batches(CalibSpec("images", str(tmp_path), batch_size=1)))
    assert len(msg) < 300


def test_error_bad_spec_values():
    _raises(ConfigError, "calibration num_samples must be an integer >= 1, got 0",
            lambda: CalibSpec("synthetic", num_samples=0))
    _raises(ConfigError, "calibration batch_size must be an integer >= 1, got -2",
            lambda: CalibSpec("synthetic", batch_size=-2))
    _raises(ConfigError, "unknown calibration source 'imgs'; valid sources: synthetic, npy, images, photos",
            lambda: CalibSpec("imgs"))
    _raises(ConfigError, "calibration source 'npy' needs a path", lambda: CalibSpec("npy"))
    _raises(ConfigError, "image_size 224 does not match the model input (1,3,32,32)",
            lambda: calibration_batches(CalibSpec("photos"), input_name="data", input_shape=SHAPE, image_size=224))
