"""Image-folder datasets from real files on disk: every mode and format, crops, junk files, classes, captions."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genpix.data import DataError, load_dataset, load_image_file
from genpix.data.folder import UnreadableImageWarning, load_folder


def _save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def _solid(mode: str, value, size=(12, 12)) -> Image.Image:
    return Image.new(mode, size, value)


def _palette_image(rgb: tuple[int, int, int], transparent: bool = False) -> Image.Image:
    image = Image.new("P", (12, 12), 1)
    image.putpalette([0, 0, 0, *rgb] + [0, 0, 0] * 254)
    if transparent:
        image.info["transparency"] = 1
    return image


# file name -> (image maker, save options, expected RGB after loading, tolerance)
MODE_CASES = {
    "a_rgb.png": (lambda: _solid("RGB", (200, 100, 50)), {}, (200, 100, 50), 0),
    "b_gray.png": (lambda: _solid("L", 77), {}, (77, 77, 77), 0),
    "c_rgba_clear.png": (lambda: _solid("RGBA", (255, 0, 0, 0)), {}, (255, 255, 255), 0),
    "d_rgba_half.png": (lambda: _solid("RGBA", (0, 0, 255, 128)), {}, (127, 127, 255), 1),
    "e_la.png": (lambda: _solid("LA", (0, 51)), {}, (204, 204, 204), 1),
    "f_palette.png": (lambda: _palette_image((10, 200, 30)), {}, (10, 200, 30), 0),
    "g_palette_clear.png": (lambda: _palette_image((10, 200, 30), transparent=True), {}, (255, 255, 255), 0),
    "h_16bit.png": (lambda: Image.fromarray(np.full((12, 12), 32896, np.uint16)), {}, (128, 128, 128), 0),
    "i_1bit.png": (lambda: _solid("1", 1), {}, (255, 255, 255), 0),
    "j_cmyk.jpg": (lambda: _solid("CMYK", (0, 255, 255, 0)), {"quality": 95}, (255, 0, 0), 12),
    "k_photo.JPG": (lambda: _solid("RGB", (30, 60, 220)), {"quality": 95}, (30, 60, 220), 6),
    "l_lossless.webp": (lambda: _solid("RGB", (90, 10, 160)), {"lossless": True}, (90, 10, 160), 0),
    "m_bitmap.bmp": (lambda: _solid("RGB", (5, 250, 5)), {}, (5, 250, 5), 0),
    "n_jpeg.jpeg": (lambda: _solid("L", 180), {"quality": 95}, (180, 180, 180), 2),
}


def test_every_mode_and_format_becomes_the_right_rgb(tmp_path):
    for name, (make, options, _, _) in MODE_CASES.items():
        _save(make(), tmp_path / name, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here may be skipped
        ds = load_folder(tmp_path, "all", image_size=8)
    assert ds.images.shape == (len(MODE_CASES), 3, 8, 8) and ds.channels == 3  # mixed modes -> RGB
    assert ds.labels is None and ds.captions is None and ds.name == str(tmp_path)
    for image, (name, (_, _, expected, tol)) in zip(ds.images.numpy(), sorted(MODE_CASES.items())):
        got = image.reshape(3, -1).astype(int)
        assert np.abs(got - np.array(expected)[:, None]).max() <= tol, (name, got[:, 0], expected)


def test_gif_uses_its_first_frame(tmp_path):
    frames = [_solid("RGB", (255, 0, 0)).convert("P"), _solid("RGB", (0, 0, 255)).convert("P")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    pixels = load_folder(tmp_path, "all", image_size=4).images.numpy().reshape(3, -1)
    assert (pixels[0] > 200).all() and (pixels[2] < 50).all()


def test_grayscale_folder_is_one_channel_unless_asked(tmp_path):
    _save(_solid("L", 10), tmp_path / "a.png")
    _save(Image.fromarray(np.full((12, 12), 65535, np.uint16)), tmp_path / "b.png")
    _save(_solid("LA", (100, 255)), tmp_path / "c.png")
    ds = load_dataset(str(tmp_path), split="all", image_size=6)
    assert ds.images.shape == (3, 1, 6, 6)
    assert ds.images[:, 0, 0, 0].tolist() == [10, 255, 100]
    rgb = load_dataset(str(tmp_path), split="all", image_size=6, channels=3)
    assert rgb.images.shape == (3, 3, 6, 6) and bool((rgb.images == ds.images.expand(-1, 3, -1, -1)).all())


def test_rgb_to_one_channel_uses_pillow_luma(tmp_path):
    _save(_solid("RGB", (200, 100, 50)), tmp_path / "a.png")
    ds = load_dataset(str(tmp_path), split="all", image_size=4, channels=1)
    assert ds.images.shape == (1, 1, 4, 4)
    assert int(ds.images[0, 0, 0, 0]) == _solid("RGB", (200, 100, 50)).convert("L").getpixel((0, 0))


@pytest.mark.parametrize("size", [(90, 30), (30, 90)])
def test_non_square_images_keep_their_centre(tmp_path, size):
    """Three bands along the long side: red, green, blue; the centre crop must be all green."""
    bands = np.zeros((size[1], size[0], 3), np.uint8)
    third = max(size) // 3
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        if size[0] > size[1]:
            bands[:, i * third:(i + 1) * third] = colour
        else:
            bands[i * third:(i + 1) * third] = colour
    _save(Image.fromarray(bands), tmp_path / "wide.png")
    image = load_folder(tmp_path, "all", image_size=10).images[0].numpy().astype(int)
    assert image.shape == (3, 10, 10)
    assert (np.abs(image - np.array([0, 255, 0])[:, None, None]) <= 2).all()


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> bytes:
    """A valid 1-bit PNG declaring 20000x20000 = 400 megapixels, in about 50 kB."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (20000, 20000)).save(path)
    return path.read_bytes()


def _broken_files(folder: Path, huge_png: bytes) -> None:
    png = folder / "ok_source.png"
    _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), png)
    data = png.read_bytes()
    png.unlink()
    (folder / "b_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "c_garbage.jpg").write_bytes(bytes(np.random.default_rng(1).integers(0, 255, 500, np.uint8)))
    (folder / "d_text.png").write_text("this is not an image\n")
    _save(_solid("RGB", (1, 2, 3), size=(1, 1)), folder / "e_tiny.png")
    (folder / "f_huge.png").write_bytes(huge_png)


def test_unreadable_files_are_skipped_with_one_warning(tmp_path, huge_png):
    _broken_files(tmp_path, huge_png)
    _save(_solid("RGB", (9, 9, 9)), tmp_path / "a_good.png")
    _save(_solid("RGB", (9, 9, 9)), tmp_path / "g_good.png")
    (tmp_path / "notes.txt").write_text("not an image, not counted")
    (tmp_path / ".hidden.png").write_text("hidden files are ignored")
    start = time.perf_counter()
    with pytest.warns(UnreadableImageWarning) as record:
        ds = load_folder(tmp_path, "all", image_size=8)
    assert time.perf_counter() - start < 2.0  # the huge image is never decoded
    assert len(record) == 1
    message = str(record[0].message)
    assert "5 files skipped" in message and "b_truncated.png" in message and "c_garbage.jpg" in message
    assert "d_text.png" in message and message.endswith(", ...") and "hidden" not in message
    assert len(ds) == 2 and bool((ds.images == 9).all())


def test_too_small_and_too_big_are_named(tmp_path, huge_png):
    _save(_solid("RGB", (1, 2, 3), size=(1, 1)), tmp_path / "a_tiny.png")
    (tmp_path / "b_huge.png").write_bytes(huge_png)
    _save(_solid("RGB", (9, 9, 9)), tmp_path / "c_good.png")
    with pytest.warns(UnreadableImageWarning, match=r"2 files skipped: a_tiny.png \(too small.*b_huge.png \(too big"):
        assert len(load_folder(tmp_path, "all", image_size=8)) == 1


def test_folder_errors(tmp_path, huge_png):
    with pytest.raises(DataError, match="no image files"):
        load_dataset(str(tmp_path))
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files"):
        load_dataset(str(tmp_path))
    _broken_files(tmp_path, huge_png)
    with pytest.raises(DataError, match=r"no readable images in .* \(5 files skipped: b_truncated.png"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_dataset(str(tmp_path / "readme.txt"))


def test_first_level_subfolders_are_classes(tmp_path):
    for rel, value in [("dogs/a.png", 1), ("cats/b.png", 2), ("cats/deeper/nest/c.webp", 3), ("dogs/D.BMP", 4)]:
        _save(_solid("L", value), tmp_path / rel)
    ds = load_folder(tmp_path, "all", image_size=4)
    assert ds.class_names == ("cats", "dogs")
    # sorted relative paths: cats/b, cats/deeper/nest/c, dogs/D.BMP, dogs/a
    assert ds.images[:, 0, 0, 0].tolist() == [2, 3, 4, 1]
    assert ds.labels.tolist() == [0, 0, 1, 1]
    _save(_solid("L", 5), tmp_path / "root.png")  # an image outside every class folder: no labels
    ds = load_folder(tmp_path, "all", image_size=4)
    assert ds.labels is None and ds.class_names is None and len(ds) == 5


def test_sidecar_captions(tmp_path):
    _save(_solid("RGB", (1, 1, 1)), tmp_path / "a.png")
    _save(_solid("RGB", (2, 2, 2)), tmp_path / "b.jpg")
    assert load_folder(tmp_path, "all", image_size=4).captions is None
    (tmp_path / "a.txt").write_text("  a dark square\n", encoding="utf-8")
    assert load_folder(tmp_path, "all", image_size=4).captions == ("a dark square", "")


def test_folder_split_and_limit(tmp_path):
    for i in range(12):
        _save(_solid("L", i * 10), tmp_path / f"img{i:02d}.png")
    train = load_dataset(str(tmp_path), image_size=4)
    test = load_dataset(str(tmp_path), split="test", image_size=4)
    assert test.images[:, 0, 0, 0].tolist() == [90]  # every 10th by sorted path
    assert len(train) == 11 and 90 not in train.images[:, 0, 0, 0].tolist()
    assert load_dataset(str(tmp_path), image_size=4, limit=3).images[:, 0, 0, 0].tolist() == [0, 10, 20]
    assert load_dataset(str(tmp_path), split="all").images.shape == (12, 1, 64, 64)  # folder native size
    one = tmp_path / "one"
    _save(_solid("L", 1), one / "x.png")
    _save(_solid("L", 2), one / "y.png")
    assert len(load_dataset(str(one), split="test", image_size=4)) == 1  # at least one test item


def test_load_image_file_matches_the_folder_pipeline(tmp_path):
    _save(Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 50, 3), np.uint8)), tmp_path / "a.png")
    image = load_image_file(tmp_path / "a.png", image_size=16, channels=1)
    assert image.shape == (1, 16, 16) and image.dtype == np.uint8
    assert np.array_equal(image, load_folder(tmp_path, "all", image_size=16, channels=1).images[0].numpy())
    (tmp_path / "b.png").write_text("not an image")
    with pytest.raises(DataError, match="not a readable image"):
        load_image_file(tmp_path / "b.png", image_size=16, channels=3)
    with pytest.raises(DataError, match="no such image file"):
        load_image_file(tmp_path / "missing.png", image_size=16, channels=3)


def test_metadata_jsonl_captions(tmp_path):
    """Hugging Face's imagefolder convention: metadata.jsonl beside the images; a sidecar .txt fills gaps."""
    (tmp_path / "sub").mkdir()
    _save(_solid("RGB", (1, 1, 1)), tmp_path / "a.png")
    _save(_solid("RGB", (2, 2, 2)), tmp_path / "sub" / "b.png")
    _save(_solid("RGB", (3, 3, 3)), tmp_path / "c.png")
    (tmp_path / "c.txt").write_text("from the sidecar", encoding="utf-8")
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": " a red fox "}\n\n{"file_name": "./sub/b.png", "caption": "a blue bird"}\n',
        encoding="utf-8")
    ds = load_folder(tmp_path, "all", image_size=4)
    assert ds.captions == ("a red fox", "from the sidecar", "a blue bird")  # a.png, c.png, sub/b.png
    for text, message in (('{"file_name": "a.png"}', r"metadata.jsonl:1: no caption \(text or caption\) for a.png"),
                          ('{"text": "x"}', 'metadata.jsonl:1: each line needs a "file_name" string'),
                          ("not json", "metadata.jsonl:1: not a JSON object")):
        (tmp_path / "metadata.jsonl").write_text(text + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=message):
            load_folder(tmp_path, "all", image_size=4)
