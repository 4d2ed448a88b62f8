import io

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils.labelling import NONE, UNLABELLED, LabellingSession
from course_utils.labelling_widget import labelling_widget, render_png
from test_labelling import gaussian_pool, line_session


def images_for(P, side=6):
    """Blank images with ink (255) in the top-left pixel and, for item i, in pixel (1, i % side)."""
    x = torch.zeros(P, 1, side, side, dtype=torch.uint8)
    x[:, 0, 0, 0] = 255
    for i in range(P):
        x[i, 0, 1, i % side] = 255
    return x


@pytest.fixture
def widget():
    pool = gaussian_pool(n_way=4, m=5, spread=1.5, sep=2.0, h=1, seed=0)
    s = LabellingSession(pool.pool_z, pool.support_z, pool.support_y, pool.classes, temperature=10.0)
    return labelling_widget(s, images_for(pool.pool_z.shape[0]))


def decode(png):
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)))


def test_render_png_dark_ink_on_white_upscaled():
    img = torch.zeros(1, 3, 2, dtype=torch.uint8)
    img[0, 1, 0] = 255  # ink
    a = decode(render_png(img, scale=4))
    assert a.shape == (12, 8)
    assert (a[4:8, 0:4] == 0).all()  # the ink pixel: a 4x4 black block
    assert a.sum() == 255 * (12 * 8 - 16)  # everything else white
    with pytest.raises(ValueError, match="uint8"):
        render_png(img.float())


def test_guess_buttons_show_the_top3_with_confidences(widget):
    s = widget.session
    prop = s.propose()
    for b, name, p in zip(widget.guess_buttons, prop.names, prop.probs):
        assert b.description == f"{name} ({p:.0%})" and not b.disabled
    assert widget.guess_buttons[0].button_style == "success"
    assert decode(widget.image.value)[4 + 0, 4 * (prop.index % 6)] == 0  # this item's picture
    counters = {k: c.value for k, c in widget.counters.items()}
    assert counters == {"auto_labelled": "auto-labelled: 0", "human_clicks": "human clicks: 0",
                        "estimated_precision": "estimated precision: -", "remaining": "remaining: 25"}


def test_clicking_a_guess_labels_the_item_and_shows_the_next(widget):
    s = widget.session
    prop = s.propose()
    widget.guess_buttons[1].click()
    assert s.labels()[prop.index].item() == prop.classes[1] and s.sources()[prop.index] == "human"
    assert s.stats()["human_clicks"] == 1 and widget.progress.value == 1
    new = s.propose()
    assert new.index != prop.index
    assert widget.guess_buttons[0].description == f"{new.names[0]} ({new.probs[0]:.0%})"
    assert widget.counters["human_clicks"].value == "human clicks: 1"
    assert widget.counters["remaining"].value == "remaining: 24"


def test_none_skip_and_undo_buttons(widget):
    s = widget.session
    first = s.propose().index
    widget.none_button.click()
    assert s.labels()[first].item() == NONE and s.stats()["none_of_these"] == 1
    second = s.propose().index
    widget.skip_button.click()
    assert s.stats()["skipped"] == 1 and s.propose().index != second
    widget.undo_button.click()
    assert s.stats()["skipped"] == 0 and s.propose().index == second
    widget.undo_button.click()
    assert s.labels()[first].item() == UNLABELLED and s.stats()["human_clicks"] == 0
    assert widget.undo_button.disabled
    widget.undo_button.click()  # nothing to undo: a message, not an exception
    assert "Nothing to undo" in widget.message.value


def test_slider_and_accept_all_above(widget):
    s = widget.session
    assert widget.accept_button.description == f"accept all >= 0.90 ({s.count_above(0.9)})"  # session.tau
    widget.slider.value = 0.8
    n = s.count_above(0.8)
    assert 5 < n < 20 and widget.accept_button.description == f"accept all >= 0.80 ({n})"
    widget.accept_button.click()
    st = s.stats()
    assert st["auto_labelled"] == n and st["human_clicks"] == 0
    conf = s.p.max(dim=1).values
    auto = [i for i, src in enumerate(s.sources()) if src == "auto"]
    assert (conf[auto] >= 0.8).all() and st["estimated_precision"] == pytest.approx(conf[auto].mean().item())
    assert widget.counters["auto_labelled"].value == f"auto-labelled: {n}"
    est = st["estimated_precision"]
    assert widget.counters["estimated_precision"].value == f"estimated precision: {est:.1%}"
    assert widget.progress.value == n
    assert widget.accept_button.disabled  # nothing more above 0.80 now
    widget.undo_button.click()
    assert s.stats()["auto_labelled"] == 0


def test_nothing_left_to_label_disables_the_buttons():
    s = line_session()
    w = labelling_widget(s, images_for(5))
    w.slider.value = 0.55  # low enough that the retrain after the last answer withdraws nothing
    w.accept_button.click()  # 4 auto labels, not z = 5 (0.5)
    w.guess_buttons[0].click()  # the last item
    assert s.stats()["remaining"] == 0 and s.propose() is None
    assert all(b.disabled for b in w.guess_buttons) and w.none_button.disabled and w.skip_button.disabled
    assert "Nothing left to label" in w.title.value and w.image.value == b""
    w.guess_buttons[0].click()  # clicking anyway changes nothing
    assert s.stats()["human_clicks"] == 1 and "Nothing to label" in w.message.value
    w.undo_button.click()
    assert not w.guess_buttons[0].disabled and s.stats()["remaining"] == 1


def test_two_class_session_hides_the_third_guess():
    w = labelling_widget(line_session(), images_for(5))
    assert w.guess_buttons[2].layout.display == "none" and w.guess_buttons[2].disabled
    assert not w.guess_buttons[1].disabled


@pytest.mark.parametrize("images, match", [
    (torch.zeros(5, 6, 6, dtype=torch.uint8), r"\(P, 1, H, W\)"),
    (torch.zeros(5, 1, 6, 6), "uint8"),
    (torch.zeros(4, 1, 6, 6, dtype=torch.uint8), "one image per pool item"),
])
def test_bad_widget_input(images, match):
    with pytest.raises(ValueError, match=match):
        labelling_widget(line_session(), images)
    with pytest.raises(ValueError, match="LabellingSession"):
        labelling_widget(object(), images_for(5))


def test_class_images_are_drawn_above_the_guesses_and_checked(widget):
    session, images = widget.session, widget.images
    n = len(session.class_names)
    class_images = (torch.arange(1, n + 1).view(n, 1, 1, 1) * 40).expand(n, *images.shape[1:]).to(torch.uint8)
    w = labelling_widget(session, images, class_images=class_images.contiguous())
    prop = session.propose()
    for k, c in enumerate(prop.classes):
        assert w.guess_images[k].value == render_png(class_images[c], 2), "each guess shows its own class"
    assert widget.guess_images[0].layout.display == "none", "without class_images no thumbnail is shown"
    with pytest.raises(ValueError, match="one example per class"):
        labelling_widget(session, images, class_images=class_images[:-1].contiguous())
