"""A labelling widget: a thin ipywidgets view over :class:`course_utils.labelling.LabellingSession`.

The layout copies superintendent's model-in-the-loop labeller (item, choices, undo/skip, progress)
and adds selective auto-labelling: the model's top-3 guesses as buttons with their confidences (the
top-1 highlighted), "none of these", a tau slider with "accept all >= tau", and live counters in the
style of SageMaker Ground Truth's label counters (auto-labelled, human clicks, estimated precision,
remaining).

Only core ipywidgets 8 parts (Image, Button, FloatSlider, IntProgress, Label, HTML, HBox/VBox): no
custom front-end, so nothing breaks with "not registered as a widget module" when JupyterLab or
ipywidgets move on (the fate of ipyannotate and jupyter-innotater). Keyboard shortcuts are left out
on purpose: number keys clash with JupyterLab's own shortcuts; ipyevents can add them if wanted.

All logic lives in the session; every button only calls it and redraws, so pytest drives the widget
by ``button.click()`` and ``slider.value = ...`` and checks ``session.stats()``. An error (undo with
nothing to undo, ...) is shown in ``message`` rather than lost in the kernel log.
"""
from __future__ import annotations

import io
import math

import ipywidgets as W
import torch
from PIL import Image
from torch import Tensor

from .labelling import LabellingSession

__all__ = ["render_png", "labelling_widget", "LabellingWidget"]

_TOP = 3


def render_png(image: Tensor, scale: int = 4) -> bytes:
    """PNG bytes of one ink-high uint8 image ``(1, H, W)`` or ``(H, W)``: dark ink on white, each
    pixel drawn as a ``scale`` x ``scale`` block (nearest neighbour, no blur)."""
    if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.dim() not in (2, 3) \
            or (image.dim() == 3 and image.shape[0] != 1):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"render_png takes one uint8 image (1, H, W) or (H, W), ink high, got {shape}.")
    a = (255 - image.reshape(image.shape[-2:])).cpu().numpy()
    im = Image.fromarray(a)  # 2-D uint8: greyscale "L"
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _guess_text(name: str, prob: float) -> str:
    return f"{name} ({prob:.0%})"


class LabellingWidget(W.VBox):
    """The widget; its parts are attributes (``guess_buttons``, ``none_button``, ``skip_button``,
    ``undo_button``, ``retrain_button``, ``slider``, ``accept_button``, ``counters`` (a dict of
    Labels), ``progress``, ``image``, ``title``, ``message``) and ``session``. Build it with
    :func:`labelling_widget`, which checks the input."""

    def __init__(self, session: LabellingSession, images: Tensor, scale: int = 4,
                 class_images: Tensor | None = None):
        self.session, self.images, self.scale, self.class_images = session, images, scale, class_images
        self.image = W.Image(format="png", width=images.shape[-1] * scale, height=images.shape[-2] * scale)
        # one labelled example above each guess: a person recognises a class by its look, not its name
        self.guess_images = [W.Image(format="png", width=images.shape[-1] * 2, height=images.shape[-2] * 2)
                             for _ in range(_TOP)]
        self.title = W.HTML()
        self.message = W.HTML()
        self.guess_buttons = [W.Button(layout=W.Layout(width="auto")) for _ in range(_TOP)]
        for k, b in enumerate(self.guess_buttons):
            b.on_click(lambda _b, k=k: self._act(lambda: self._answer_guess(k)))
        self.none_button = W.Button(description="none of these", tooltip="no class fits this item")
        self.skip_button = W.Button(description="skip", tooltip="ask me later")
        self.undo_button = W.Button(description="undo", icon="undo")
        self.retrain_button = W.Button(description="retrain", tooltip="recompute the prototypes now")
        self.none_button.on_click(lambda _b: self._act(lambda: self.session.answer(None)))
        self.skip_button.on_click(lambda _b: self._act(self.session.skip))
        self.undo_button.on_click(lambda _b: self._act(self.session.undo))
        self.retrain_button.on_click(lambda _b: self._act(self.session.retrain))
        self.slider = W.FloatSlider(value=session.tau, min=0.0, max=1.0, step=0.01, description="tau",
                                    readout_format=".2f", continuous_update=False)
        self.accept_button = W.Button(layout=W.Layout(width="auto"), button_style="warning")
        self.accept_button.on_click(
            lambda _b: self._act(lambda: self.session.accept_above(self.slider.value)))
        self.slider.observe(lambda _c: self._refresh_accept(), names="value")
        self.counters = {k: W.Label() for k in
                         ("auto_labelled", "human_clicks", "estimated_precision", "remaining")}
        self.progress = W.IntProgress(value=0, min=0, max=session.pool_size, description="labelled")
        super().__init__([
            self.title, self.image,
            W.HBox([W.VBox([i, b]) for i, b in zip(self.guess_images, self.guess_buttons)] + [self.none_button]),
            W.HBox([self.skip_button, self.undo_button, self.retrain_button]),
            W.HBox([self.slider, self.accept_button]),
            W.HBox(list(self.counters.values())), self.progress, self.message])
        self.refresh()

    def _answer_guess(self, k: int) -> None:
        prop = self.session.propose()
        if prop is None or k >= len(prop.classes):
            raise ValueError("Nothing to label here; undo to go back.")
        self.session.answer(prop.classes[k])

    def _act(self, fn) -> None:
        try:
            fn()
            self.message.value = ""
        except ValueError as err:
            self.message.value = f"<span style='color:#b2182b'>{err}</span>"
        self.refresh(keep_message=True)

    def _refresh_accept(self) -> None:
        n = self.session.count_above(self.slider.value)
        self.accept_button.description = f"accept all >= {self.slider.value:.2f} ({n})"
        self.accept_button.disabled = n == 0

    def refresh(self, keep_message: bool = False) -> None:
        """Redraw every part from the session."""
        s, prop = self.session.stats(), self.session.propose()
        self.none_button.disabled = self.skip_button.disabled = prop is None
        if prop is None:
            self.image.value = b""
            self.title.value = "<b>Nothing left to label</b>: every item has a label."
            for b in self.guess_buttons:
                b.description, b.disabled, b.button_style = "-", True, ""
            if not keep_message or not self.message.value:
                self.message.value = "Done. Undo to change the last step, or read session.labels()."
        else:
            self.image.value = render_png(self.images[prop.index], self.scale)
            self.title.value = (f"item {prop.index} ({s['remaining']} of {s['pool_size']} left): "
                                "which class is it?")
            for k, b in enumerate(self.guess_buttons):
                shown = self.class_images is not None and k < len(prop.classes)
                self.guess_images[k].layout.display = None if shown else "none"
                if shown:
                    self.guess_images[k].value = render_png(self.class_images[prop.classes[k]], 2)
                if k < len(prop.classes):
                    b.description = _guess_text(prop.names[k], prop.probs[k])
                    b.disabled, b.layout.display = False, None
                    b.button_style = "success" if k == 0 else ""
                else:
                    b.description, b.disabled, b.layout.display = "", True, "none"
        self.undo_button.disabled = not self.session.can_undo
        self._refresh_accept()
        est = s["estimated_precision"]
        self.counters["auto_labelled"].value = f"auto-labelled: {s['auto_labelled']}"
        self.counters["human_clicks"].value = f"human clicks: {s['human_clicks']}"
        self.counters["estimated_precision"].value = (
            "estimated precision: -" if math.isnan(est) else f"estimated precision: {est:.1%}")
        self.counters["remaining"].value = f"remaining: {s['remaining']}"
        self.progress.value = s["pool_size"] - s["remaining"]


def labelling_widget(session: LabellingSession, images: Tensor, scale: int = 4,
                     class_images: Tensor | None = None):
    """The widget for ``session``; ``images`` ``(P, 1, H, W)`` uint8 ink-high, one per pool item.

    ``class_images`` ``(N, 1, H, W)`` uint8, one labelled example per class (e.g. its first support),
    is drawn above each guess button.
    """
    if not isinstance(session, LabellingSession):
        raise ValueError("session must be a course_utils.labelling.LabellingSession.")
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (P, 1, H, W) tensor, got {shape}.")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0-255, ink high), got {images.dtype}; "
                         "convert float images with (x * 255).round().to(torch.uint8).")
    if images.shape[0] != session.pool_size:
        raise ValueError(f"There are {images.shape[0]} images but {session.pool_size} pool items; give one "
                         "image per pool item, in the pool's order.")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}.")
    if class_images is not None:
        n = len(session.class_names)
        if not isinstance(class_images, Tensor) or class_images.dim() != 4 or class_images.shape[0] != n \
                or class_images.dtype != torch.uint8 or class_images.shape[1:] != images.shape[1:]:
            shape = tuple(class_images.shape) if isinstance(class_images, Tensor) else type(class_images).__name__
            raise ValueError(f"class_images must be a uint8 ({n}, {', '.join(map(str, images.shape[1:]))}) "
                             f"tensor, one example per class, got {shape}.")
    return LabellingWidget(session, images, scale, class_images)

