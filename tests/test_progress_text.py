"""``common.progress.short_lines``: the node text the frontend shows in a box that breaks lines anywhere
(``word-break: break-all`` in ComfyUI's frontend 1.32), wrapped at spaces first so no word is cut."""

from comfyui_full4d.common.progress import TEXT_COLUMNS, short_lines


def test_lines_are_wrapped_at_spaces_and_keep_every_word_whole():
    text = ("iteration 1250/3000\nrecent training PSNR ~27.4 dB\n118,204 Gaussians, init: views: DA3 depth, "
            "re-calibrated views 2, 4 and 5 (focal x1.08)")
    out = short_lines(text)
    lines = out.split("\n")
    assert all(len(line) <= TEXT_COLUMNS for line in lines), lines
    assert out.split() == text.split()  # the same words, in order, none cut
    assert lines[:2] == ["iteration 1250/3000", "recent training PSNR ~27.4 dB"]  # short lines stay as they are


def test_a_word_longer_than_a_line_stays_whole_and_blank_lines_stay():
    path = "full4d/scene_00001/frame_000_t0.000.ply"
    assert short_lines(f"saved {path}\n\ndone", width=20).split("\n") == ["saved", path, "", "done"]
