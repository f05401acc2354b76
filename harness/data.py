"""Calibration and evaluation data for the quantizer.

Quantization with KL calibration needs a few dozen representative inputs; the
accuracy checks need real images. This module provides both, from four sources:

``synthetic``
    Seeded standard-normal tensors (what a normalised image looks like to the
    network, statistically). Needs no files; good for latency-only runs.
``npy``
    Ready-made tensors: a ``.npy`` array of shape (N, C, H, W), a ``.npz``
    archive (the array named like the model input, else its first array), or a
    folder of ``.npy`` files (sorted by name, each (C, H, W) or (n, C, H, W),
    concatenated).
``images``
    A folder of image files (searched recursively, sorted by path), decoded with
    PIL and run through the standard ImageNet evaluation preprocessing
    (:func:`preprocess_image`).
``photos``
    The real photographs bundled with scikit-image (:data:`PHOTOS`), with the
    same preprocessing. When more samples are requested than there are photos,
    deterministic augmented views are added (see :func:`photo_views`).

:func:`calibration_batches` turns a :class:`CalibSpec` into batches of model
input; :func:`load_photos` gives the un-augmented photos for evaluation.

Where a source holds more samples than ``num_samples``, the first
``num_samples`` are used; where it holds fewer, all of them are used (only
``synthetic`` and ``photos`` can make up as many as asked for).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError, HarnessError

SOURCES = ("synthetic", "npy", "images", "photos", "digits")

#: File extensions the ``images`` source reads (lower case; matched case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: The evaluation crop covers this fraction of the resized short side (224 of 256).
CROP_FRACTION = 0.875

#: scikit-image's bundled real photographs, colour ones first. Each entry is
#: (name, description); the name is the ``skimage.data`` function that loads it
#: (``motorcycle`` is the left view of ``stereo_motorcycle``). Grayscale photos
#: are replicated to three channels. All of them ship inside the scikit-image
#: wheel: none needs the optional download (pooch) that some skimage.data
#: images do.
PHOTOS: Tuple[Tuple[str, str], ...] = (
    ("astronaut", "portrait of astronaut Eileen Collins (RGB)"),
    ("chelsea", "Chelsea the cat (RGB)"),
    ("coffee", "a cup of coffee (RGB)"),
    ("rocket", "a SpaceX Falcon 9 launch (RGB)"),
    ("motorcycle", "a motorcycle, left view of stereo_motorcycle (RGB)"),
    ("hubble_deep_field", "Hubble eXtreme Deep Field (RGB)"),
    ("immunohistochemistry", "immunohistochemistry-stained tissue (RGB)"),
    ("retina", "human retina fundus photograph (RGB)"),
    ("camera", "the cameraman (gray)"),
    ("coins", "Greek coins from Pompeii (gray)"),
    ("moon", "surface of the moon (gray)"),
    ("clock", "motion-blurred wall clock (gray)"),
    ("page", "scanned page of text (gray)"),
    ("brick", "brick wall texture (gray)"),
    ("grass", "grass texture (gray)"),
    ("gravel", "gravel texture (gray)"),
)

Progress = Union[None, bool, Callable[[int, int], None]]


@dataclass
class CalibSpec:
    """Where calibration data comes from and how much of it to use.

    source: ``"synthetic"``, ``"npy"``, ``"images"`` or ``"photos"``.
    path: file or folder for ``npy`` and ``images`` (unused otherwise).
    num_samples: how many samples to use (at most; see the module docstring).
    batch_size: samples per yielded batch (the last one may be smaller).
    seed: seeds ``synthetic`` data and the random views of ``photos``.
    """

    source: str = "synthetic"
    path: Optional[str] = None
    num_samples: int = 32
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError (one line) on a bad value; called on construction."""
        if self.source not in SOURCES:
            raise ConfigError(f"unknown calibration source '{self.source}'; valid sources: {', '.join(SOURCES)}")
        for key in ("num_samples", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"calibration {key} must be an integer >= 1, got {value!r}")
        if self.source in ("npy", "images") and not self.path:
            raise ConfigError(f"calibration source '{self.source}' needs a path (a file or folder)")


# ----------------------------------------------------------------------------- preprocessing


def _as_pil(img: np.ndarray):
    """An HWC / HW uint8 array as a PIL image (RGBA loses its alpha)."""
    from PIL import Image

    img = np.asarray(img)
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        raise HarnessError(f"preprocess_image needs a uint8 image, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return Image.fromarray(img, mode="L")
    if img.ndim == 3 and img.shape[2] in (3, 4):
        pil = Image.fromarray(np.ascontiguousarray(img), mode="RGB" if img.shape[2] == 3 else "RGBA")
        return pil.convert("RGB") if img.shape[2] == 4 else pil
    raise HarnessError(f"preprocess_image needs an HxW or HxWxC (C = 1, 3 or 4) image, got shape {img.shape}")


def _size_hw(image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


def preprocess_image(
    img: np.ndarray,
    image_size: Union[int, Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """The standard evaluation preprocessing of one image; returns CHW float32.

    img: HxWx3 (RGB), HxWx4 (alpha dropped) or HxW (gray) uint8.
    image_size: side of the square output (or an (H, W) pair).
    mean, std: per-channel normalisation in 0..1 pixel terms. Their length is
    the number of output channels: 3 gives RGB (gray images replicated), 1
    gives luminance.

    Steps: resize (bilinear) so that the short side is image_size / 0.875
    (256 for 224), centre-crop image_size, scale to 0..1, subtract mean, divide
    by std, HWC -> CHW.
    """
    from PIL import Image

    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean.shape != std.shape or mean.size not in (1, 3):
        raise HarnessError(f"mean and std need 1 or 3 values each, got {mean.size} and {std.size}")
    out_h, out_w = _size_hw(image_size)
    pil = _as_pil(img).convert("RGB" if mean.size == 3 else "L")

    # Resize so that the crop is CROP_FRACTION of the image in its tighter direction.
    w, h = pil.size
    scale = max(round(out_h / CROP_FRACTION) / h, round(out_w / CROP_FRACTION) / w)
    new_w, new_h = max(out_w, int(round(w * scale))), max(out_h, int(round(h * scale)))
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
    pil = pil.crop((left, top, left + out_w, top + out_h))

    x = np.asarray(pil, dtype=np.float32) / 255.0
    if x.ndim == 2:
        x = x[:, :, None]
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


# ----------------------------------------------------------------------------- photos


# PHOTOS names that differ from their skimage.data loader
_PHOTO_LOADERS = {"motorcycle": "stereo_motorcycle"}


def photo_names() -> List[str]:
    """Names of the :data:`PHOTOS` that the installed scikit-image provides, in order."""
    import skimage.data

    return [name for name, _ in PHOTOS if hasattr(skimage.data, _PHOTO_LOADERS.get(name, name))]


@functools.lru_cache(maxsize=None)
def _photo_cached(name: str) -> np.ndarray:
    import skimage.data

    try:
        img = getattr(skimage.data, _PHOTO_LOADERS.get(name, name))()
    except Exception as exc:  # a missing file or optional dependency
        raise HarnessError(f"cannot load scikit-image photo '{name}': {exc}".splitlines()[0]) from None
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)
    img.setflags(write=False)
    return img


def load_photo(name: str) -> np.ndarray:
    """One of the :data:`PHOTOS` as an HxWx3 uint8 RGB array (read-only, cached)."""
    known = [n for n, _ in PHOTOS]
    if name not in known:
        raise ConfigError(f"unknown photo '{name}'; known photos: {', '.join(known)}")
    return _photo_cached(name)


def load_photos(
    image_size: Union[int, Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    names: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """The photos (all available ones, or `names`), preprocessed, without augmentation.

    Returns float32 (N, C, H, W), in the order of `names` (default :func:`photo_names`).
    This is what accuracy evaluation uses.
    """
    names = list(names) if names is not None else photo_names()
    return np.stack([preprocess_image(load_photo(n), image_size, mean, std) for n in names])


def _view_schedule() -> List[Tuple[float, str, bool]]:
    """The fixed list of augmented views: (crop scale, crop position, horizontal flip)."""
    views = [(1.0, "center", False), (1.0, "center", True)]
    for scale in (0.75, 0.5):
        for pos in ("center", "top-left", "top-right", "bottom-left", "bottom-right"):
            for flip in (False, True):
                views.append((scale, pos, flip))
    return views


VIEWS = _view_schedule()


def _crop_view(img: np.ndarray, scale: float, pos: Union[str, Tuple[float, float]], flip: bool) -> np.ndarray:
    """A square crop of side `scale` x the short side, at a named or fractional position."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * scale)))
    if isinstance(pos, str):
        fy = {"center": 0.5, "top-left": 0.0, "top-right": 0.0, "bottom-left": 1.0, "bottom-right": 1.0}[pos]
        fx = {"center": 0.5, "top-left": 0.0, "top-right": 1.0, "bottom-left": 0.0, "bottom-right": 1.0}[pos]
    else:
        fy, fx = pos
    top, left = int(round((h - side) * fy)), int(round((w - side) * fx))
    out = img[top:top + side, left:left + side] if scale < 1.0 else img
    return out[:, ::-1] if flip else out


def photo_views(n: int, seed: int = 0) -> List[Tuple[str, float, object, bool]]:
    """The first `n` photo samples of the ``photos`` calibration source.

    Each is (photo name, crop scale, crop position, flip). Samples go round the
    photos view by view: first every photo as it is (the evaluation view),
    then every photo flipped, then square crops of 75% and 50% of the short
    side at the centre and the four corners, each plain and flipped
    (22 views per photo, 352 samples with 16 photos). Beyond that, random
    square crops (30-100% of the short side, random place and flip) drawn from
    a RandomState(seed). Everything is deterministic.
    """
    names = photo_names()
    if not names:
        raise HarnessError("the installed scikit-image provides none of the bundled photos")
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        k, name = divmod(i, len(names))
        if k < len(VIEWS):
            scale, pos, flip = VIEWS[k]
            out.append((names[name], scale, pos, flip))
        else:
            scale = float(rng.uniform(0.3, 1.0))
            pos = (float(rng.uniform()), float(rng.uniform()))
            out.append((names[name], scale, pos, bool(rng.randint(2))))
    return out


# ----------------------------------------------------------------------------- sources


def _check_path(path: str) -> str:
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise ConfigError(f"calibration data path {path} does not exist")
    return path


def _find_images(folder: str) -> List[str]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    files.sort()
    if not files:
        raise HarnessError(f"no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: str) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array (HarnessError if it cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise HarnessError(f"cannot read image {path}: {exc}".splitlines()[0]) from None


def _fmt_shape(shape) -> str:
    return "(" + ",".join(str(int(d)) for d in shape) + ")"


def _load_arrays(path: str, input_name: str) -> List[np.ndarray]:
    """The arrays behind an ``npy`` source (each with a leading batch axis or not, checked later)."""
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, n) for n in os.listdir(path)
            if n.lower().endswith(".npy") and os.path.isfile(os.path.join(path, n))
        )
        if not files:
            raise HarnessError(f"no .npy files found in {path}")
    else:
        files = [path]
    arrays = []
    for f in files:
        try:
            if f.lower().endswith(".npz"):
                with np.load(f) as z:
                    if not z.files:
                        raise HarnessError(f"calibration data file {f} holds no arrays")
                    key = input_name if input_name in z.files else z.files[0]
                    arrays.append(z[key])
            else:
                arrays.append(np.load(f, mmap_mode="r"))
        except HarnessError:
            raise
        except Exception as exc:
            raise HarnessError(f"cannot read calibration data {f}: {exc}".splitlines()[0]) from None
    return arrays


def _check_array(arr: np.ndarray, input_shape: Tuple[int, ...], input_dtype: np.dtype) -> np.ndarray:
    """Accept (N,)+sample shape or one sample; check the dtype; return (N, ...)."""
    sample = tuple(input_shape[1:])
    if tuple(arr.shape) == sample:
        arr = arr[None]
    if arr.ndim != len(input_shape) or tuple(arr.shape[1:]) != sample:
        raise HarnessError(
            f"calibration data has shape {_fmt_shape(arr.shape)}, the model input is {_fmt_shape(input_shape)}"
        )
    ok = arr.dtype == input_dtype or (
        np.issubdtype(arr.dtype, np.floating) and np.issubdtype(input_dtype, np.floating)
    )
    if not ok:
        raise HarnessError(f"calibration data has dtype {arr.dtype}, the model input is {input_dtype}")
    return arr


def _norm_stats(mean, std, channels: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean / std for image data (one value broadcasts; None: 0 and 1)."""
    if channels not in (1, 3):
        raise HarnessError(f"image calibration data needs a model input with 1 or 3 channels, not {channels}")
    mean = tuple(float(v) for v in np.atleast_1d(0.0 if mean is None else mean))
    std = tuple(float(v) for v in np.atleast_1d(1.0 if std is None else std))
    if len(mean) == 1:
        mean *= channels
    if len(std) == 1:
        std *= channels
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(
            f"mean/std have {len(mean)}/{len(std)} values, the model input has {channels} channels"
        )
    return mean, std


def _progress_hook(progress: Progress, total: int):
    """(update(done), close()) for a callback, a tqdm bar, or nothing."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="calibration data", unit="img", leave=False)

        def update(done):
            bar.update(done - bar.n)

        return update, bar.close
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    return (lambda done: None), (lambda: None)


def calibration_batches(
    spec: CalibSpec,
    *,
    input_name: str,
    input_shape: Sequence[int],
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    image_size: Optional[Union[int, Sequence[int]]] = None,
    input_dtype: str = "float32",
    progress: Progress = None,
) -> Iterator[Dict[str, np.ndarray]]:
    """Batches of calibration input: ``{input_name: array (batch, C, H, W)}``.

    input_shape: the model input shape (its batch dimension is ignored; C, H, W
    are what every sample must have). mean / std / image_size describe the
    image preprocessing (``images`` and ``photos`` only): mean / std in 0..1
    pixel terms, one value per channel or one for all (default 0 and 1);
    image_size defaults to the input's H, W and must agree with them. progress: None (quiet), True
    (a tqdm bar), or a callback ``progress(done, total)`` called after each
    batch with sample counts.

    The spec, the path and the data's shape are checked here, before the first
    batch is asked for, so that mistakes surface before any long work starts.
    Decoding errors of individual images surface when that batch is made.
    """
    spec.validate()
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) < 2:
        raise HarnessError(f"calibration needs a batched model input, got shape {_fmt_shape(input_shape)}")
    dtype = np.dtype(input_dtype)
    n, bs = int(spec.num_samples), int(spec.batch_size)

    if spec.source == "synthetic":
        sample = input_shape[1:]
        rng = np.random.RandomState(spec.seed)
        make = lambda lo, hi: rng.normal(0.0, 1.0, size=(hi - lo,) + sample)  # noqa: E731
    elif spec.source in ("npy", "digits"):
        if spec.source == "digits":  # the digits CNN's own training split (harness.models.digits)
            from .models.digits import load_digits_split

            path = "digits train split"
            arrays = [_check_array(load_digits_split(seed=0)[0][0], input_shape, dtype)]
        else:
            path = _check_path(spec.path)
            arrays = [_check_array(a, input_shape, dtype) for a in _load_arrays(path, input_name)]
        starts = np.cumsum([0] + [len(a) for a in arrays])
        n = min(n, int(starts[-1]))
        if n == 0:
            raise HarnessError(f"calibration data {path} holds no samples")

        def make(lo, hi):
            parts = []
            for a, s in zip(arrays, starts[:-1]):
                a_lo, a_hi = max(lo - s, 0), min(hi - s, len(a))
                if a_lo < a_hi:
                    parts.append(np.asarray(a[a_lo:a_hi]))
            return np.concatenate(parts)
    else:
        if len(input_shape) != 4:
            raise HarnessError(
                f"image calibration data needs an NCHW model input, got shape {_fmt_shape(input_shape)}"
            )
        if not np.issubdtype(dtype, np.floating):
            raise HarnessError(f"image calibration data is float32, the model input is {dtype}")
        chw_mean, chw_std = _norm_stats(mean, std, input_shape[1])
        hw = input_shape[2:]
        if image_size is not None and _size_hw(image_size) != hw:
            raise ConfigError(
                f"image_size {image_size} does not match the model input {_fmt_shape(input_shape)}"
            )
        if spec.source == "images":
            path = _check_path(spec.path)
            files = (_find_images(path) if os.path.isdir(path) else [path])[:n]
            n = len(files)
            load = lambda i: read_image(files[i])  # noqa: E731
        else:
            views = photo_views(n, spec.seed)
            load = lambda i: _crop_view(load_photo(views[i][0]), *views[i][1:])  # noqa: E731

        def make(lo, hi):
            return np.stack([preprocess_image(load(i), hw, chw_mean, chw_std) for i in range(lo, hi)])

    return _batches(make, n, bs, input_name, dtype, progress)


def _batches(make, n, bs, input_name, dtype, progress) -> Iterator[Dict[str, np.ndarray]]:
    update, close = _progress_hook(progress, n)
    try:
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            yield {input_name: np.ascontiguousarray(make(lo, hi), dtype=dtype)}
            update(hi)
    finally:
        close()


def calibration_arrays(spec: CalibSpec, **kwargs) -> np.ndarray:
    """All calibration samples of `spec` in one array (N, C, H, W); kwargs as calibration_batches."""
    name = kwargs.setdefault("input_name", "data")
    return np.concatenate([b[name] for b in calibration_batches(spec, **kwargs)])


# ----------------------------------------------------------------------------- labeled image folders


@dataclass
class LabeledImages:
    """A labeled image folder: one sub-folder per class (the ImageFolder convention).

    files: image paths, in evaluation order. labels: the model's class index of each file.
    classes: the class folder names, sorted. class_index: folder name -> the model's class index.
    """

    files: List[str]
    labels: np.ndarray
    classes: List[str]
    class_index: Dict[str, int]


def class_folders(path: str) -> List[str]:
    """The sub-folders of `path` (sorted, hidden ones left out): its classes when it is a labeled folder."""
    if not os.path.isdir(path):
        return []
    return sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isdir(os.path.join(path, n)))


def is_labeled_folder(path: str) -> bool:
    """True when `path` is a folder with class sub-folders (else its images are unlabeled)."""
    return bool(class_folders(os.path.expanduser(str(path))))


def _read_labels_file(path: str) -> Dict[str, int]:
    """A ``labels:`` file: a YAML (or JSON) mapping of class folder name -> the model's class index."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"accuracy.labels: file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"accuracy.labels: cannot read {path}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"accuracy.labels: {path} must map class folder names to class indices "
                          "(lines like `cat: 281`)")
    out = {}
    for name, index in data.items():
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigError(f"accuracy.labels: {path}: class '{name}' maps to {index!r}, not an integer "
                              "class index")
        out[str(name)] = index
    return out


def _read_synsets_file(path: str) -> Dict[str, int]:
    """A ``synsets:`` file: one class per line (line i is class i), its first word the folder name
    (ImageNet's ``n01440764 tench, Tinca tinca``)."""
    if not os.path.isfile(path):
        raise ConfigError(f"accuracy.synsets: file not found: {path}")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"accuracy.synsets: cannot read {path}: {exc}".splitlines()[0]) from None
    while lines and not lines[-1].strip():
        lines.pop()
    out = {}
    for i, line in enumerate(lines):
        words = line.split()
        if not words:
            raise ConfigError(f"accuracy.synsets: {path} line {i + 1} is empty (line i names class i - 1)")
        if words[0] in out:
            raise ConfigError(f"accuracy.synsets: {path} lists '{words[0]}' twice (lines {out[words[0]] + 1} "
                              f"and {i + 1})")
        out[words[0]] = i
    if not out:
        raise ConfigError(f"accuracy.synsets: {path} lists no classes")
    return out


def labeled_images(
    path: str,
    *,
    labels_file: Optional[str] = None,
    synsets_file: Optional[str] = None,
    num_classes: Optional[int] = None,
    num_samples: Optional[int] = None,
) -> LabeledImages:
    """The images of a labeled folder and their labels (checked before any image is decoded).

    Class indices: the sorted sub-folder names are 0, 1, ... (default); or `labels_file` maps folder
    names to the model's class indices; or `synsets_file` lists the model's classes one per line
    (ImageNet synsets), the folder named like line i being class i. Every index must be a class of
    the model (0 .. num_classes - 1). Each class folder is searched recursively and must hold images.
    num_samples: take this many, going round the classes (one image of each class in turn), so that
    a subset still covers every class; default all.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isdir(path):
        raise ConfigError(f"accuracy.path: folder not found: {path}")
    classes = class_folders(path)
    if not classes:
        raise ConfigError(f"accuracy.path: {path} has no class sub-folders")
    loose = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(path, n)))
    if loose:
        raise ConfigError(f"accuracy.path: {path} has class sub-folders and also images at its top ({loose[0]}, "
                          "...): put every image in its class folder")
    if labels_file and synsets_file:
        raise ConfigError("accuracy: give `labels:` or `synsets:`, not both")
    limit = f"the model has {num_classes} classes (0..{num_classes - 1})" if num_classes else ""
    if labels_file or synsets_file:
        key, src = ("labels", labels_file) if labels_file else ("synsets", synsets_file)
        mapping = _read_labels_file(src) if labels_file else _read_synsets_file(src)
        for name, index in mapping.items():
            if index < 0 or (num_classes is not None and index >= num_classes):
                raise ConfigError(f"accuracy.{key}: {src} gives class '{name}' the index {index}; "
                                  + (limit or "class indices start at 0"))
        missing = [c for c in classes if c not in mapping]
        if missing:
            raise ConfigError(f"accuracy.{key}: {src} has no class index for the folder '{missing[0]}' "
                              f"({len(missing)} of {len(classes)} class folders missing)")
        class_index = {c: mapping[c] for c in classes}
    else:
        if num_classes is not None and len(classes) > num_classes:
            raise ConfigError(f"accuracy.path: {path} has {len(classes)} class folders but {limit}; "
                              "map the folders to the model's classes with `labels:` or `synsets:`")
        class_index = {c: i for i, c in enumerate(classes)}
    per_class = []
    for c in classes:
        folder = os.path.join(path, c)
        files = []
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            files.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ConfigError(f"accuracy.path: class folder {folder} holds no images "
                              f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
        per_class.append(sorted(files))
    order = []  # round the classes: the first image of each, then the second, ...
    for k in range(max(len(f) for f in per_class)):
        order += [(files[k], class_index[c]) for c, files in zip(classes, per_class) if k < len(files)]
    if num_samples:
        order = order[:num_samples]
    return LabeledImages([f for f, _ in order], np.array([y for _, y in order], dtype=np.int64), classes,
                         class_index)


def load_labeled_images(
    images: LabeledImages,
    image_size: Union[int, Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    progress: Progress = None,
) -> np.ndarray:
    """Decode and preprocess the images of a labeled folder: float32 (N, C, H, W)."""
    channels = len(np.atleast_1d(mean))
    chw_mean, chw_std = _norm_stats(mean, std, channels)
    hw = _size_hw(image_size)
    batches = _batches(lambda lo, hi: np.stack([preprocess_image(read_image(images.files[i]), hw, chw_mean,
                                                                 chw_std) for i in range(lo, hi)]),
                       len(images.files), 16, "x", np.float32, progress)
    return np.concatenate([b["x"] for b in batches])
