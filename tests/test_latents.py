"""Full4DVAEEncodeViews: each view encoded as its own clip (not one long video)."""

import pytest
import torch

from fixtures.wan import tiny_wan_vae


def test_encode_views_equals_per_view_encoding(comfy_host):
    vae = tiny_wan_vae()
    V, T, H, W = 3, 5, 32, 32
    g = torch.Generator().manual_seed(0)
    images = torch.rand(V * T, H, W, 3, generator=g)
    node = comfy_host.node("Full4DVAEEncodeViews")
    lat = node.execute(images=images, vae=vae, num_views=V, skip_source=True).result[0]["samples"]
    assert lat.shape == (V - 1, 48, 2, 2, 2)
    for k, v in enumerate(range(1, V)):
        torch.testing.assert_close(lat[k:k + 1], vae.encode(images[v * T:(v + 1) * T]))
    # the host's VAEEncode on the whole batch would give one 15-frame clip instead
    assert vae.encode(images).shape[0] == 1
    full = node.execute(images=images, vae=vae, num_views=V, skip_source=False).result[0]["samples"]
    torch.testing.assert_close(full[1:], lat)


def test_encode_views_rejects_a_batch_that_is_not_view_major(comfy_host):
    with pytest.raises(ValueError, match="num_views"):
        comfy_host.node("Full4DVAEEncodeViews").execute(images=torch.rand(7, 32, 32, 3), vae=tiny_wan_vae(),
                                                       num_views=3, skip_source=True)
