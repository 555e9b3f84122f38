import torch

from harness.models.quantizers.lookup import nearest_code
from harness.models.quantizers.vq import VectorQuantizer, rotate_to


def test_nearest_code_matches_full_distance_matrix_in_small_chunks():
    g = torch.Generator().manual_seed(0)
    z, cb = torch.randn(300, 8, generator=g), torch.randn(1000, 8, generator=g)
    expected = torch.cdist(z, cb).argmin(1)
    assert torch.equal(nearest_code(z, cb, max_elements=1000 * 7), expected)   # 7 rows per chunk
    assert torch.equal(nearest_code(z, cb), expected)


def test_nearest_code_restricted_to_first_codes():
    cb = torch.tensor([[0.0], [10.0], [1.0]])
    z = torch.tensor([[0.9]])
    assert nearest_code(z, cb).item() == 2
    assert nearest_code(z, cb, num_codes=2).item() == 0


def test_straight_through_and_losses():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, beta=0.25)
    z = torch.randn(3, 5, 4, requires_grad=True)
    out = vq(z)
    assert out.indices.shape == (3, 5)
    torch.testing.assert_close(out.quantized, vq.lookup(out.indices))
    out.quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))     # identity gradient to the encoder
    expected_commit = 0.25 * (z.detach() - vq.lookup(out.indices).detach()).pow(2).mean()
    torch.testing.assert_close(out.losses["commitment"], expected_commit)


def test_l2_normalized_lookup_uses_cosine_similarity():
    vq = VectorQuantizer(8, 3, l2_norm=True)
    z = torch.randn(10, 3)
    cos = torch.nn.functional.normalize(z, dim=-1) @ vq.codebook().t()
    assert torch.equal(vq(z).indices, cos.argmax(1))


def test_per_row_code_limits_match_separate_searches():
    g = torch.Generator().manual_seed(1)
    z, cb = torch.randn(50, 4, generator=g), torch.randn(300, 4, generator=g)
    limits = torch.randint(1, 301, (50,), generator=g)
    got = nearest_code(z, cb, limits, max_elements=300 * 8)
    expected = torch.stack([nearest_code(z[i:i + 1], cb, int(limits[i]))[0] for i in range(50)])
    assert torch.equal(got, expected) and bool((got < limits).all())


def test_rotation_trick_value_is_the_code_and_gradient_is_rotated():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 3, generator=g, requires_grad=True)
    e = torch.randn(5, 3, generator=g)
    out = rotate_to(z, e)
    torch.testing.assert_close(out, e, atol=1e-5, rtol=1e-5)
    w = torch.randn(5, 3, generator=g)
    (out * w).sum().backward()
    # the gradient is R^T w scaled by ||e||/||z||: same norm ratio, and not the straight-through w
    ratio = e.norm(dim=-1) / z.detach().norm(dim=-1)
    torch.testing.assert_close(z.grad.norm(dim=-1), ratio * w.norm(dim=-1), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(z.grad, w)


def test_lookup_never_materializes_more_than_the_chunk(monkeypatch):
    real, sizes = torch.addmm, []

    def recording_addmm(*args, **kwargs):
        out = real(*args, **kwargs)
        sizes.append(out.numel())
        return out
    monkeypatch.setattr(torch, "addmm", recording_addmm)
    z, cb = torch.randn(1000, 8), torch.randn(4096, 8)
    nearest_code(z, cb, max_elements=4096 * 16)
    assert sizes and max(sizes) <= 4096 * 16 and sum(sizes) == 1000 * 4096
