import pytest
import torch
from PIL import Image

from harness.data import center_crop_arr, open_dataset
from harness.errors import VQBenchError


def test_fashion_mnist_splits_subsets_and_channels():
    try:
        train = open_dataset("fashion-mnist", "train")
    except VQBenchError as e:
        pytest.skip(str(e))
    test = open_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    x, y = test.batch(torch.arange(8))
    assert x.shape == (8, 1, 28, 28) and x.min() >= -1 and x.max() <= 1 and y.dtype == torch.long
    sub = open_dataset("fashion-mnist", "test", n=500)
    again = open_dataset("fashion-mnist", "test", n=500)
    assert torch.equal(sub.images_uint8, again.images_uint8) and len(sub) == 500
    assert len(sub.labels.unique()) == 10                               # class-mixed
    rgb32 = open_dataset("fashion-mnist", "test", n=4, channels=3, resolution=32)
    assert rgb32.batch(torch.arange(4))[0].shape == (4, 3, 32, 32)
    assert rgb32.describe() == {"name": "fashion-mnist", "split": "test", "n": 4, "resolution": 32, "channels": 3}


def test_procedural_is_deterministic_and_labelled():
    a, b = open_dataset("procedural", "train"), open_dataset("procedural", "train")
    assert torch.equal(a.images_uint8, b.images_uint8) and len(a) == 512
    assert a.labels.unique().tolist() == [0, 1, 2, 3]
    assert not torch.equal(a.images_uint8[:128], open_dataset("procedural", "test").images_uint8)


def _save(path, size, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagefolder_classes_flat_and_adm_crop(tmp_path):
    _save(tmp_path / "cls" / "train" / "b_cat" / "1.png", (300, 200))
    _save(tmp_path / "cls" / "train" / "a_dog" / "2.jpg", (64, 90), (10, 20, 30))
    ds = open_dataset(f"imagefolder:{tmp_path / 'cls'}", "train", resolution=32)
    assert len(ds) == 2 and ds.num_classes == 2
    x, y = ds.batch(torch.arange(2))
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 1]           # sorted class names

    gradient = Image.fromarray((torch.arange(120 * 90 * 3) % 251).view(90, 120, 3).numpy().astype("uint8"))
    _save(tmp_path / "flat" / "g.png", (1, 1))
    gradient.save(tmp_path / "flat" / "g.png")
    flat = open_dataset(f"imagefolder:{tmp_path / 'flat'}", "test", resolution=40, channels=3)
    # reference: halve with BOX while >= 2x, BICUBIC so the short side is 40, center crop
    ref = gradient.resize((60, 45), Image.BOX).resize((53, 40), Image.BICUBIC).crop((6, 0, 46, 40))
    assert torch.equal(flat.load_uint8(0), torch.from_numpy(__import__("numpy").array(ref)).permute(2, 0, 1))
    assert flat[0][1].item() == -1
    assert center_crop_arr(gradient, 40).shape == (40, 40, 3)


def test_imagefolder_errors_name_the_problem(tmp_path):
    with pytest.raises(VQBenchError, match="is not a folder"):
        open_dataset(f"imagefolder:{tmp_path / 'missing'}", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VQBenchError, match="no images in .*empty.*accepted extensions"):
        open_dataset(f"imagefolder:{tmp_path / 'empty'}", "train")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    ds = open_dataset(f"imagefolder:{tmp_path / 'bad'}", "train", resolution=16)
    with pytest.raises(VQBenchError, match=r"cannot read image .*broken\.png"):
        ds.batch(torch.arange(1))


def test_unknown_dataset_and_missing_cifar(tmp_path):
    with pytest.raises(VQBenchError, match="did you mean fashion-mnist"):
        open_dataset("fashion-minst", "train")
    with pytest.raises(VQBenchError, match="CIFAR-10 not found under"):
        open_dataset("cifar10", "train", root=str(tmp_path))
    with pytest.raises(VQBenchError, match="has splits train, test"):
        open_dataset("procedural", "validation")
