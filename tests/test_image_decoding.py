"""imagefolder: how each kind of image file decodes (issue #13) and the folder rules, on crafted files.

Every image is read through ``open_dataset("imagefolder:...")`` at a resolution equal to its size (or
its short side), where the ADM crop is the identity (or a plain center crop), so decoded values
can be compared exactly with what they should be.
"""
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from harness.core.errors import VQBenchError
from harness.data import datasets
from harness.data.datasets import open_dataset

RNG = np.random.default_rng(13)


def _read(folder, res, channels=None, i=0) -> np.ndarray:
    """The dataset's uint8 image i as H x W x C."""
    ds = open_dataset(f"imagefolder:{folder}", "train", resolution=res, channels=channels)
    return ds.load_uint8(i).permute(1, 2, 0).numpy()


def _png(path, arr: np.ndarray, bit_depth: int, color_type: int) -> None:
    """A PNG written byte by byte (Pillow cannot write 16-bit RGB or gray+alpha)."""
    h, w = arr.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + arr[y].astype(dtype).tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _on_white(color, alpha):
    c, a = color.astype(np.float64), alpha.astype(np.float64)
    return np.round((c * a + 255 * (255 - a)) / 255).astype(np.uint8)


# ---------------------------------------------------------------- 16-bit
def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 32768, 65535, 257], [256, 255, 65280, 1000]] * 2, dtype=np.uint16)
    want = np.array([[0, 128, 255, 1], [1, 0, 255, 3]] * 2, dtype=np.uint8)     # v >> 8 (4 x 4)
    Image.fromarray(levels).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    gray = _read(tmp_path, 4, channels=1)
    assert gray.shape == (4, 4, 1) and np.array_equal(gray[..., 0], want)
    rgb = _read(tmp_path, 4, channels=3)
    assert all(np.array_equal(rgb[..., k], want) for k in range(3))


def test_16bit_gray_pgm_mode_i(tmp_path):
    values = np.array([0, 32768, 65535, 512], dtype=">u2").reshape(2, 2)
    (tmp_path / "g.pgm").write_bytes(b"P5 2 2 65535\n" + values.tobytes())
    assert Image.open(tmp_path / "g.pgm").mode == "I"
    assert np.array_equal(_read(tmp_path, 2, channels=1)[..., 0], [[0, 128], [255, 2]])


def test_16bit_gray_transparent_value_is_white(tmp_path):
    Image.fromarray(np.array([[0, 4096], [8192, 0]], np.uint16)).save(tmp_path / "t.png", transparency=0)
    assert np.array_equal(_read(tmp_path, 2, channels=1)[..., 0], [[255, 16], [32, 255]])


def test_16bit_rgb_and_gray_alpha_pngs(tmp_path):
    rgb16 = RNG.integers(0, 65536, (4, 4, 3)).astype(np.uint16)
    _png(tmp_path / "a.png", rgb16, 16, 2)
    assert np.array_equal(_read(tmp_path, 4), (rgb16 >> 8).astype(np.uint8))
    (tmp_path / "a.png").unlink()
    la16 = RNG.integers(0, 65536, (4, 4, 2)).astype(np.uint16)
    la16[0, 0, 1], la16[0, 1, 1] = 0, 65535                  # fully transparent, fully opaque
    _png(tmp_path / "b.png", la16, 16, 4)
    g, a = (la16[..., :1] >> 8), (la16[..., 1:] >> 8)
    got = _read(tmp_path, 4, channels=1)
    assert np.array_equal(got, _on_white(g, a))
    assert got[0, 0, 0] == 255 and got[0, 1, 0] == la16[0, 1, 0] >> 8


def test_float_image_is_refused_by_name(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(VQBenchError, match=r"cannot use image .*f\.tif: .*floating-point") as e:
        _read(tmp_path, 4)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- palette, alpha, CMYK, gray
def test_palette_image_takes_its_palette_colours(tmp_path):
    palette = RNG.integers(0, 256, (256, 3)).astype(np.uint8)
    index = RNG.integers(0, 256, (8, 8)).astype(np.uint8)
    im = Image.frombytes("P", (8, 8), index.tobytes())
    im.putpalette(palette.tobytes())
    im.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.array_equal(_read(tmp_path, 8), palette[index])


def test_palette_with_transparency_is_on_white(tmp_path):
    palette = RNG.integers(0, 200, (4, 3)).astype(np.uint8)
    index = np.array([[0, 1, 2, 3]] * 4, np.uint8)
    im = Image.frombytes("P", (4, 4), index.tobytes())
    im.putpalette(palette.tobytes())
    im.save(tmp_path / "p.png", transparency=bytes([255, 0, 128, 255]))     # per-entry alpha
    alpha = np.array([255, 0, 128, 255], np.uint8)[index][..., None]
    got = _read(tmp_path, 4)
    assert np.array_equal(got, _on_white(palette[index], alpha))
    assert (got[:, 1] == 255).all() and np.array_equal(got[:, 0], palette[index][:, 0])
    (tmp_path / "p.png").unlink()
    im.save(tmp_path / "g.gif", transparency=1)                              # a GIF's transparent index
    got = _read(tmp_path, 4)
    assert (got[:, 1] == 255).all() and np.array_equal(got[:, 3], palette[index][:, 3])


def test_rgba_is_composited_on_white(tmp_path):
    rgba = RNG.integers(0, 256, (8, 8, 4)).astype(np.uint8)
    rgba[0, :, 3], rgba[1, :, 3] = 0, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = _read(tmp_path, 8)
    assert np.array_equal(got, _on_white(rgba[..., :3], rgba[..., 3:]))
    assert (got[0] == 255).all() and np.array_equal(got[1], rgba[1, :, :3])
    assert not np.array_equal(got, rgba[..., :3])                 # the alpha was not dropped
    luma = _read(tmp_path, 8, channels=1)[..., 0]
    want = np.round(got.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    assert np.abs(luma.astype(int) - want.astype(int)).max() <= 1


def test_rgb_colour_key_transparency_is_white(tmp_path):
    rgb = RNG.integers(1, 256, (4, 4, 3)).astype(np.uint8)
    rgb[2, 2] = (0, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "k.png", transparency=(0, 0, 0))
    want = rgb.copy()
    want[2, 2] = 255
    assert np.array_equal(_read(tmp_path, 4), want)


def test_gray_alpha_on_white_keeps_gray(tmp_path):
    la = RNG.integers(0, 256, (8, 8, 2)).astype(np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    want = _on_white(la[..., :1], la[..., 1:])
    assert np.array_equal(_read(tmp_path, 8, channels=1), want)
    assert np.array_equal(_read(tmp_path, 8, channels=3), np.repeat(want, 3, axis=2))


def test_cmyk_jpeg_uses_pillow_conversion(tmp_path):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[:8, :8, 0] = 255                      # cyan
    cmyk[:8, 8:, 1] = 255                      # magenta
    cmyk[8:, :8, 2] = 255                      # yellow
    cmyk[8:, 8:, 3] = 128                      # half black
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    got = _read(tmp_path, 16)
    assert np.array_equal(got, np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB")))
    want = np.asarray(Image.fromarray(cmyk, "CMYK").convert("RGB")).astype(int)
    assert np.abs(got.astype(int) - want).max() <= 12                    # JPEG tolerance
    assert tuple(got[3, 3]) == pytest.approx((0, 255, 255), abs=12)    # cyan, not inverted


def test_grayscale_is_exact_in_every_channel(tmp_path):
    gray = RNG.integers(0, 256, (12, 12)).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert np.array_equal(_read(tmp_path, 12, channels=1)[..., 0], gray)
    rgb = _read(tmp_path, 12, channels=3)
    assert all(np.array_equal(rgb[..., k], gray) for k in range(3))
    Image.fromarray(gray > 128).save(tmp_path / "g.png")                 # mode 1: 0 / 255
    assert np.array_equal(_read(tmp_path, 12, channels=1)[..., 0], np.where(gray > 128, 255, 0))


def test_rgb_asked_for_one_channel_is_luma(tmp_path):
    rgb = RNG.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    want = datasets.convert_channels(torch.from_numpy(rgb).permute(2, 0, 1)[None], 1)[0, 0].numpy()
    assert np.array_equal(_read(tmp_path, 8, channels=1)[..., 0], want)
    assert np.array_equal(_read(tmp_path, 8, channels=3), rgb)


# ---------------------------------------------------------------- EXIF orientation
def _blocky(h, w) -> np.ndarray:
    """An asymmetric image of flat 8x8 blocks (JPEG keeps flat blocks nearly exact)."""
    blocks = RNG.integers(0, 256, (h // 8, w // 8, 3)).astype(np.uint8)
    return np.repeat(np.repeat(blocks, 8, 0), 8, 1)


@pytest.mark.parametrize("orientation, to_stored, to_display", [
    (3, lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),       # stored turned left, shown right
    (8, lambda a: np.rot90(a, -1), lambda a: np.rot90(a, 1)),
])
def test_exif_orientation_is_applied_before_the_crop(tmp_path, orientation, to_stored, to_display):
    shown = _blocky(48, 32)                                # what a viewer shows: 48 high, 32 wide
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(to_stored(shown))).save(tmp_path / "o.jpg", quality=98,
                                                                  subsampling=0, exif=exif)
    stored = np.asarray(Image.open(tmp_path / "o.jpg").convert("RGB"))
    assert stored.shape[:2] == to_stored(shown).shape[:2]
    got = _read(tmp_path, 32)                              # the short side: center crop of rows 8..40
    assert np.array_equal(got, to_display(stored)[8:40])
    assert np.abs(got.astype(int) - shown[8:40].astype(int)).max() <= 8
    unrotated = datasets.center_crop_arr(Image.fromarray(stored), 32)     # what ignoring the tag gives
    assert np.abs(got.astype(int) - unrotated.astype(int)).max() > 8


def test_exif_orientation_in_a_png(tmp_path):
    shown = RNG.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1))).save(tmp_path / "o.png", exif=exif)
    assert np.array_equal(_read(tmp_path, 6), shown)


# ---------------------------------------------------------------- folder rules
def _img(path, size=8, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3)).astype(np.uint8)).save(path)


def test_mixed_folder_is_refused_naming_what_it_found(tmp_path):
    for i in range(3):
        _img(tmp_path / f"{i}.png", seed=i)
    _img(tmp_path / "b" / "x.png")
    _img(tmp_path / "a" / "y.png")
    with pytest.raises(VQBenchError) as e:
        open_dataset(f"imagefolder:{tmp_path}", "train")
    msg = str(e.value)
    assert msg == (f"imagefolder: {tmp_path} has 3 images at its top level and 2 subfolders (a, b); "
                   "put the images in class folders or remove the subfolders")


def test_folder_named_like_an_image_is_a_folder(tmp_path):
    _img(tmp_path / "mixed" / "top.png")
    _img(tmp_path / "mixed" / "cat.png" / "inside.png")
    with pytest.raises(VQBenchError, match=r"1 image at its top level and 1 subfolder \(cat\.png\) "
                                           r"\(cat\.png: a folder named like an image is still a folder\)"):
        open_dataset(f"imagefolder:{tmp_path / 'mixed'}", "train")
    _img(tmp_path / "classes" / "cat.png" / "c.png", seed=1)
    _img(tmp_path / "classes" / "dog" / "d.png", seed=2)
    ds = open_dataset(f"imagefolder:{tmp_path / 'classes'}", "train", resolution=8)
    assert ds.classes == ["cat.png", "dog"] and [label for _, label in ds.files] == [0, 1]
    assert [p.name for p, _ in ds.files] == ["c.png", "d.png"]


def test_flat_and_class_folders_and_split_folder(tmp_path):
    for i in range(2):
        _img(tmp_path / "flat" / f"{i}.jpg", seed=i)
    flat = open_dataset(f"imagefolder:{tmp_path / 'flat'}", "train", resolution=8)
    assert flat.num_classes == 0 and [label for _, label in flat.files] == [-1, -1]
    _img(tmp_path / "s" / "train" / "b" / "1.png")
    _img(tmp_path / "s" / "train" / "a" / "2.png")
    (tmp_path / "s" / "train" / "empty").mkdir()                        # an empty class keeps its label
    _img(tmp_path / "s" / "test" / "a" / "3.png")
    (tmp_path / "s" / "README.txt").write_text("outside the split folders: not read")
    ds = open_dataset(f"imagefolder:{tmp_path / 's'}", "train", resolution=8)
    assert ds.classes == ["a", "b", "empty"] and [label for _, label in ds.files] == [0, 1]
    assert len(open_dataset(f"imagefolder:{tmp_path / 's'}", "test", resolution=8)) == 1


def test_non_image_files_are_refused_by_name_and_count(tmp_path):
    _img(tmp_path / "cat" / "a.png")
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "labels.csv").write_text("x")
    (tmp_path / "dog" / "Makefile").write_text("x")
    with pytest.raises(VQBenchError) as e:
        open_dataset(f"imagefolder:{tmp_path}", "train")
    msg = str(e.value)
    assert msg.startswith(f"imagefolder: {tmp_path / 'cat' / 'notes.txt'} is not an image (its extension "
                          "'.txt' is not an image extension); it is 1 of 3 non-image entries in")
    assert "accepted extensions: .png" in msg and "\n" not in msg
    (tmp_path / "cat" / "notes.txt").unlink()
    (tmp_path / "dog" / "labels.csv").unlink()
    with pytest.raises(VQBenchError, match=r"dog/Makefile is not an image \(it has no image extension\); "
                                           r"remove it or hide it"):
        open_dataset(f"imagefolder:{tmp_path}", "train")
    (tmp_path / "dog" / "Makefile").rename(tmp_path / "dog" / ".Makefile")
    assert len(open_dataset(f"imagefolder:{tmp_path}", "train")) == 1
    (tmp_path / "top.md").write_text("x")                                 # top level of class folders
    with pytest.raises(VQBenchError, match=r"top\.md is not an image"):
        open_dataset(f"imagefolder:{tmp_path}", "train")


def test_hidden_entries_are_ignored(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "._a.png").write_bytes(b"AppleDouble, not a png")         # hidden though named .png
    _img(tmp_path / ".ipynb_checkpoints" / "b.png")                       # a hidden folder: not a class
    ds = open_dataset(f"imagefolder:{tmp_path}", "train", resolution=8)
    assert [p.name for p, _ in ds.files] == ["a.png"] and ds.num_classes == 0
    assert ds.batch(torch.tensor([0]))[0].shape == (1, 3, 8, 8)
    (tmp_path / "a.png").unlink()
    with pytest.raises(VQBenchError, match=rf"no images in {tmp_path} \(accepted extensions"):
        open_dataset(f"imagefolder:{tmp_path}", "train")


def test_subfolders_inside_a_class_folder_are_refused(tmp_path):
    _img(tmp_path / "cat" / "a.png")
    _img(tmp_path / "cat" / "more" / "b.png")
    with pytest.raises(VQBenchError, match=r"class folder .*/cat has 1 subfolder \(more\); a class folder "
                                           r"holds image files only"):
        open_dataset(f"imagefolder:{tmp_path}", "train")
    # only train/ exists and the test split is asked: the message says why train/ looked like a class
    _img(tmp_path / "s" / "train" / "cat" / "a.png")
    with pytest.raises(VQBenchError, match=r"class folder .*s/train has .*s/test does not exist"):
        open_dataset(f"imagefolder:{tmp_path / 's'}", "test")


def test_broken_link_loop_and_unreadable_folder(tmp_path, monkeypatch):
    _img(tmp_path / "a" / "x.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "a" / "gone.png")
    with pytest.raises(VQBenchError, match=r"a/gone\.png is not an image \(a broken symbolic link\)"):
        open_dataset(f"imagefolder:{tmp_path / 'a'}", "train")
    (tmp_path / "a" / "gone.png").unlink()
    os.symlink("loop", tmp_path / "a" / "loop")
    with pytest.raises(VQBenchError, match=r"cannot open .*a/loop \(Too many levels of symbolic links\)"):
        open_dataset(f"imagefolder:{tmp_path / 'a'}", "train")
    os.symlink("self", tmp_path / "self")
    with pytest.raises(VQBenchError, match=r"imagefolder: cannot open .*/self \(Too many levels"):
        open_dataset(f"imagefolder:{tmp_path / 'self'}", "train")
    _img(tmp_path / "c" / "y.png")
    # unreadable: chmod 000 does not stop root, so the listing error is simulated as well
    real = os.scandir

    def deny(path):
        if str(path).endswith("/c"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(datasets.os, "scandir", deny)
    with pytest.raises(VQBenchError, match=r"imagefolder: cannot list .*/c \(Permission denied\); make it "
                                           r"readable"):
        open_dataset(f"imagefolder:{tmp_path / 'c'}", "train")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_chmod_000_folder(tmp_path):
    _img(tmp_path / "cat" / "a.png")
    (tmp_path / "cat").chmod(0)
    try:
        with pytest.raises(VQBenchError, match=r"cannot list .*/cat \(Permission denied\)"):
            open_dataset(f"imagefolder:{tmp_path}", "train")
    finally:
        (tmp_path / "cat").chmod(0o755)


def test_undecodable_files_are_named(tmp_path):
    (tmp_path / "text.png").write_text("hello, not a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    levels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    Image.fromarray(levels).save(tmp_path / "trunc16.png")
    data = (tmp_path / "trunc16.png").read_bytes()
    (tmp_path / "trunc16.png").write_bytes(data[: len(data) // 2])
    ds = open_dataset(f"imagefolder:{tmp_path}", "train", resolution=8)
    for i, (path, _) in enumerate(ds.files):
        with pytest.raises(VQBenchError, match=rf"cannot read image .*{path.name}.*remove or replace") as e:
            ds.load_uint8(i)
        assert "\n" not in str(e.value)


def test_control_characters_in_names_stay_on_one_line(tmp_path):
    (tmp_path / "bad\nname.txt").write_text("x")
    _img(tmp_path / "a.png")
    with pytest.raises(VQBenchError) as e:
        open_dataset(f"imagefolder:{tmp_path}", "train")
    assert "\n" not in str(e.value) and "bad\\nname.txt" in str(e.value)
