import pytest
import torch

from comfyui_full4d.media.grid import merge_views, split_views, view_grid


def test_split_merge_roundtrip_is_view_major():
    x = torch.arange(3 * 2 * 1 * 1 * 1, dtype=torch.float32).reshape(6, 1, 1, 1)
    v = split_views(x, 3)
    assert v.shape == (3, 2, 1, 1, 1)
    assert v[1, 0].item() == 2 and v[2, 1].item() == 5  # view 1 frame 0 is the third image
    assert torch.equal(merge_views(v), x)


def test_view_grid_places_each_view_in_its_cell():
    V, T, H, W = 5, 2, 3, 4
    views = torch.rand(V, T, H, W, 3)
    g = view_grid(views, columns=3, gap=1)
    assert g.shape == (T, 2 * H + 1, 3 * W + 2, 3)
    for v in range(V):
        r, c = divmod(v, 3)
        assert torch.equal(g[:, r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W], views[v])
    assert g[:, H + 1:, 2 * (W + 1):].abs().sum() == 0  # empty sixth cell stays black


def test_split_rejects_wrong_count():
    with pytest.raises(ValueError, match="num_views"):
        split_views(torch.zeros(7, 2, 2, 3), 3)
