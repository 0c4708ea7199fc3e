"""look_at against the OpenCV axes: right = x, down = y, forward = z."""

import torch

from comfyui_full4d.geometry.cameras import look_at


def test_camera_at_origin_looking_forward_is_identity():
    R, t = look_at(torch.zeros(3), torch.tensor([0.0, 0.0, 2.0]))
    torch.testing.assert_close(R, torch.eye(3))
    torch.testing.assert_close(t, torch.zeros(3))


def test_orbiting_camera_keeps_world_up_at_the_top_of_the_image():
    eye = torch.tensor([1.0, 0.0, 1.0])  # to the right of the scene centre (0, 0, 1), looking along -x
    R, t = look_at(eye, torch.tensor([0.0, 0.0, 1.0]))
    assert torch.det(R) > 0.999
    above = R @ torch.tensor([0.0, -1.0, 1.0]) + t   # a point above the centre (world up = -y)
    assert above[1] < 0, "a point above the scene must project to the upper image half (y < 0)"
    torch.testing.assert_close(R[2], torch.tensor([-1.0, 0.0, 0.0]))  # forward = towards the centre
