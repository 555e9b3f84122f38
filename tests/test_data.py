"""harness.data.datasets: registry datasets, subsets, channel/resolution conversion, image folders, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.datasets import center_crop_arr, open_dataset
from harness.core.errors import VQBenchError


@pytest.fixture(scope="module")
def fmnist_test():
    try:
        return open_dataset("fashion-mnist", "test")
    except VQBenchError as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")


def _check_batch(ds, k, shape):
    x, y = ds.batch(torch.arange(k))
    assert x.dtype == torch.float32 and x.shape == (k, *shape)
    assert x.min() >= -1 and x.max() <= 1 and y.dtype == torch.int64 and y.shape == (k,)
    return x, y


# ---------------------------------------------------------------- Fashion-MNIST
def test_fashion_mnist_shapes_ranges_labels(fmnist_test):
    assert len(fmnist_test) == 10000 and fmnist_test.num_classes == 10
    assert fmnist_test.images_uint8.dtype == torch.uint8
    assert fmnist_test.images_uint8.shape == (10000, 1, 28, 28)
    assert fmnist_test.labels.unique().tolist() == list(range(10))
    x, _ = _check_batch(fmnist_test, 16, (1, 28, 28))
    assert x.min() == -1 and x.max() == 1                       # full uint8 range is used
    img, label = fmnist_test[3]
    assert img.shape == (1, 28, 28) and torch.equal(img, x[3]) and label.dtype == torch.int64
    assert fmnist_test.describe() == {"name": "fashion-mnist", "split": "test", "n": 10000,
                                      "resolution": 28, "channels": 1}
    assert len(open_dataset("fashion-mnist", "train")) == 60000


def test_fashion_mnist_subset_is_deterministic_nested_and_class_mixed(fmnist_test):
    a = open_dataset("fashion-mnist", "test", n=200)
    b = open_dataset("fashion-mnist", "test", n=200)
    assert len(a) == 200 and torch.equal(a.images_uint8, b.images_uint8) and torch.equal(a.labels, b.labels)
    assert len(a.labels.unique()) == 10                          # not the first 200 of one class
    assert torch.bincount(a.labels).min() >= 5
    big = open_dataset("fashion-mnist", "test", n=1000)           # smaller n is a subset of larger n
    rows = {bytes(r.numpy()) for r in big.images_uint8.flatten(1)}
    assert all(bytes(r.numpy()) in rows for r in a.images_uint8.flatten(1))
    assert len(open_dataset("fashion-mnist", "test", n=10**6)) == 10000


def test_fashion_mnist_channels_and_resolution(fmnist_test):
    rgb = open_dataset("fashion-mnist", "test", n=8, channels=3, resolution=32)
    x, _ = _check_batch(rgb, 8, (3, 32, 32))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])    # gray repeated
    assert (rgb.channels, rgb.resolution) == (3, 32)
    assert rgb.describe() == {"name": "fashion-mnist", "split": "test", "n": 8, "resolution": 32, "channels": 3}
    small = open_dataset("fashion-mnist", "test", n=8, resolution=14)
    _check_batch(small, 8, (1, 14, 14))


def test_fashion_mnist_missing_files_error(tmp_path, monkeypatch):
    import harness.data.datasets as data
    monkeypatch.setattr(data, "fashion_mnist_dirs", lambda root=None: [tmp_path / "nowhere"])
    with pytest.raises(VQBenchError, match=r"Fashion-MNIST not found.*nowhere.*scripts/setup.sh") as e:
        open_dataset("fashion-mnist", "test")
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- procedural
def test_procedural_deterministic_and_balanced():
    a, b = open_dataset("procedural", "train"), open_dataset("procedural", "train")
    assert torch.equal(a.images_uint8, b.images_uint8) and torch.equal(a.labels, b.labels)
    assert a.images_uint8.shape == (512, 1, 16, 16) and a.num_classes == 4
    assert torch.bincount(a.labels).tolist() == [128] * 4
    test = open_dataset("procedural", "test")
    assert len(test) == 128 and not torch.equal(a.images_uint8[:128], test.images_uint8)
    _check_batch(a, 32, (1, 16, 16))
    # images within a class differ (jitter), and the classes differ on average
    assert len({bytes(im.numpy()) for im in a.images_uint8}) == 512
    sub = open_dataset("procedural", "train", n=40, channels=3, resolution=24)
    assert sub.images_uint8.shape == (40, 3, 24, 24) and len(sub.labels.unique()) == 4


def test_rgb_served_as_luma():
    from harness.data.datasets import convert_channels
    rgb = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8).view(3, 3, 1, 1)
    assert convert_channels(rgb, 1).flatten().tolist() == [76, 150, 29]      # ITU-R 601 weights


# ---------------------------------------------------------------- image folders
def _noise(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _adm_reference(img, res):
    """ADM's crop spelled out step by step with PIL, for the sizes used below."""
    w, h = img.size
    while min(w, h) >= 2 * res:
        w, h = w // 2, h // 2
        img = img.resize((w, h), Image.BOX)
    s = res / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BICUBIC)
    left, top = (img.size[0] - res) // 2, (img.size[1] - res) // 2
    return np.asarray(img.crop((left, top, left + res, top + res)))


def test_imagefolder_class_folders(tmp_path):
    _save(_noise(300, 200, 1), tmp_path / "train" / "zebra" / "a.png")
    _save(_noise(64, 90, 2), tmp_path / "train" / "ant" / "b.jpg")
    _save(_noise(40, 40, 3), tmp_path / "train" / "ant" / "c.PNG")            # extensions: any case
    (tmp_path / "train" / "ant" / ".notes.txt").write_text("not an image")      # hidden: skipped
    _save(_noise(50, 50, 4), tmp_path / "test" / "ant" / "d.png")
    ds = open_dataset(f"imagefolder:{tmp_path}", "train", resolution=32)
    assert len(ds) == 3 and ds.num_classes == 2 and ds.classes == ["ant", "zebra"]
    x, y = _check_batch(ds, 3, (3, 32, 32))
    assert y.tolist() == [0, 0, 1]                                             # sorted class names
    assert len(open_dataset(f"imagefolder:{tmp_path}", "test", resolution=32)) == 1   # <path>/<split>
    gray = open_dataset(f"imagefolder:{tmp_path}", "train", resolution=16, channels=1)
    assert gray.batch(torch.tensor([2]))[0].shape == (1, 1, 16, 16)
    assert gray.describe()["channels"] == 1 and gray.describe()["resolution"] == 16


def test_imagefolder_flat_folder_adm_crop_matches_pil_reference(tmp_path):
    sizes = [(517, 333), (333, 517), (120, 90), (20, 30), (64, 64)]   # halving twice, once, upscaling
    for i, (w, h) in enumerate(sizes):
        _save(_noise(w, h, i), tmp_path / f"{i}.png")
    _save(_noise(50, 50).convert("L"), tmp_path / "5_gray.png")              # converted to RGB
    ds = open_dataset(f"imagefolder:{tmp_path}", "train", resolution=40)      # no train/: the folder
    assert len(ds) == 6 and ds.num_classes == 0 and ds.resolution == 40 and ds.channels == 3
    x, y = _check_batch(ds, 6, (3, 40, 40))
    assert y.tolist() == [-1] * 6
    for i, (w, h) in enumerate(sizes):
        ref = _adm_reference(_noise(w, h, i), 40)
        assert np.array_equal(ds.load_uint8(i).permute(1, 2, 0).numpy(), ref)
        assert np.array_equal(center_crop_arr(_noise(w, h, i), 40), ref)
    assert torch.equal(x[0], ds[0][0]) and ds[0][1].item() == -1
    assert open_dataset(f"imagefolder:{tmp_path}", "train").resolution == 256


def test_imagefolder_subset_deterministic(tmp_path):
    for c in range(3):
        for i in range(10):
            _save(_noise(8, 8, c * 10 + i), tmp_path / f"c{c}" / f"{i}.png")
    a = open_dataset(f"imagefolder:{tmp_path}", "train", resolution=8, n=9)
    b = open_dataset(f"imagefolder:{tmp_path}", "train", resolution=8, n=9)
    assert a.files == b.files and len(a) == 9
    assert len({label for _, label in a.files}) == 3


def test_imagefolder_errors(tmp_path):
    with pytest.raises(VQBenchError, match="is not a folder.*does not exist"):
        open_dataset(f"imagefolder:{tmp_path / 'missing'}", "train")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "readme.txt").write_text("x")
    with pytest.raises(VQBenchError, match=r"no images in .*empty.*accepted extensions: .png"):
        open_dataset(f"imagefolder:{tmp_path / 'empty'}", "train")
    with pytest.raises(VQBenchError, match="needs a path"):
        open_dataset("imagefolder", "train")
    _save(_noise(8, 8), tmp_path / "bad" / "good.png")
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png at all")
    ds = open_dataset(f"imagefolder:{tmp_path / 'bad'}", "train", resolution=8)   # lazy: opens fine
    bad_index = [p.name for p, _ in ds.files].index("broken.png")
    with pytest.raises(VQBenchError, match=r"cannot read image .*bad/broken\.png") as e:
        ds.batch(torch.arange(len(ds)))
    assert "\n" not in str(e.value)
    assert ds.batch(torch.tensor([1 - bad_index]))[0].shape == (1, 3, 8, 8)


def test_truncated_image_names_the_file(tmp_path):
    _save(_noise(64, 64), tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    ds = open_dataset(f"imagefolder:{tmp_path}", "train", resolution=8)
    with pytest.raises(VQBenchError, match=r"cannot read image .*t\.png"):
        ds[0]


# ---------------------------------------------------------------- names and arguments
def test_unknown_dataset_suggests_close_names():
    with pytest.raises(VQBenchError, match="did you mean fashion-mnist"):
        open_dataset("fashion-mnst", "train")
    with pytest.raises(VQBenchError, match="did you mean.*imagefolder"):
        open_dataset("imagefoldr:/tmp", "train")


def test_bad_arguments():
    with pytest.raises(VQBenchError, match="has splits train, test"):
        open_dataset("procedural", "validation")
    with pytest.raises(VQBenchError, match="channels must be 1 or 3"):
        open_dataset("procedural", "train", channels=4)
    with pytest.raises(VQBenchError, match="positive"):
        open_dataset("procedural", "train", n=0)
    with pytest.raises(VQBenchError, match="resolution must be positive"):
        open_dataset("procedural", "train", resolution=0)


def test_cifar10_missing_folder_error(tmp_path, monkeypatch):
    with pytest.raises(VQBenchError, match=r"CIFAR-10 not found under .*nope.*download=True") as e:
        open_dataset("cifar10", "train", root=str(tmp_path / "nope"))
    assert "\n" not in str(e.value)
    monkeypatch.setenv("VQBENCH_DATA", str(tmp_path / "data"))
    with pytest.raises(VQBenchError, match=r"CIFAR-10 not found under .*data/cifar10"):
        open_dataset("cifar10", "test")


def test_cifar10_reads_torchvision_files(tmp_path, monkeypatch):
    """Tiny stand-in batches in torchvision's layout (its md5 check patched out): CHW, labels, luma."""
    import pickle
    from torchvision.datasets import CIFAR10
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / CIFAR10.meta["filename"]).write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    ds = open_dataset(f"cifar10:{tmp_path}", "test")
    assert ds.images_uint8.shape == (4, 3, 32, 32) and ds.labels.tolist() == [0, 1, 2, 9]
    raw = pickle.loads((folder / "test_batch").read_bytes())["data"]
    assert np.array_equal(ds.images_uint8.numpy(), raw.reshape(4, 3, 32, 32))     # planes stay R, G, B
    assert len(open_dataset("cifar10", "train", root=str(tmp_path))) == 20
    gray = open_dataset(f"cifar10:{tmp_path}", "test", channels=1, resolution=16, n=2)
    _check_batch(gray, 2, (1, 16, 16))
