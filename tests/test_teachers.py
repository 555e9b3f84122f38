"""Teachers for FQGAN's representation loss are the real packaged networks."""
import pytest
import torch

from harness.models.catalog import load_all
from harness.core.registry import FEATURE_EXTRACTORS

load_all()


def test_efficientnet_lite0_recognizes_a_cat():
    data = pytest.importorskip("skimage.data")
    from skimage.transform import resize
    from harness.models.teachers import load_efficientnet_lite0
    img = torch.from_numpy(resize(data.chelsea(), (224, 224), anti_aliasing=True)).permute(2, 0, 1)[None].float()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        top5 = load_efficientnet_lite0()((img - mean) / std).topk(5).indices[0].tolist()
    assert top5[0] in range(281, 286)                  # ImageNet's domestic-cat classes


def test_inception_map_pools_to_the_fid_features():
    from harness.models.teachers import InceptionMapTeacher, load_fid_inception
    teacher = InceptionMapTeacher()
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    fmap = teacher(x)
    assert fmap.shape == (2, 2048, 8, 8)
    tf_input = ((x + 1) / 2) * (1 + 0.9921875) - 1
    with torch.no_grad():
        pooled = load_fid_inception()(tf_input)
    torch.testing.assert_close(fmap.mean((2, 3)), pooled, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", [e.name for e in FEATURE_EXTRACTORS.entries() if not e.meta.get("takes_argument")])
def test_every_teacher_declares_its_dimension(name):
    entry = FEATURE_EXTRACTORS.entry(name)
    out = entry.obj()(torch.rand(1, 1, 28, 28) * 2 - 1)
    assert out.dim() == 4 and out.shape[1] == entry.meta["dim"]
