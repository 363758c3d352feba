"""StarDist and a shown napari viewer (OpenGL) in one process: no TensorFlow/Mesa crash.

TensorFlow next to Mesa's llvmpipe segfaults or aborts at exit (see ``core/segmentation/_tf_safe``).
This file runs the StarDist backend, with the real ``2D_versatile_he`` architecture, in a viewer
that is shown and rendered, off the GUI thread as the Ki-67 widget does; the pytest process must
then exit 0. Run under Xvfb: ``xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest ...``.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

pytest.importorskip("stardist")
pytest.importorskip("torch")

from tests.support.stardist_models import disc_image, write_disc_model  # noqa: E402

RADIUS_PX = 8.0
CENTRES = [(40 + 60 * i, 40 + 60 * j) for i in range(3) for j in range(3)]


@pytest.fixture(scope="module")
def disc_model(tmp_path_factory):
    return write_disc_model(tmp_path_factory.mktemp("sd") / "discs", RADIUS_PX)


def _segment_in_worker(qtbot, segmenter, rgb, mpp):
    """Run ``iter_segment`` in napari's ``thread_worker``, as a widget would."""
    from napari.qt.threading import thread_worker

    worker = thread_worker(segmenter.iter_segment, start_thread=False)(rgb, mpp)
    steps, results = [], []
    worker.yielded.connect(steps.append)
    worker.returned.connect(results.append)
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        worker.start()
    assert results, "the worker returned no labels"
    return results[0], steps


def _canvas(viewer) -> np.ndarray:
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)


@pytest.mark.slow
def test_stardist_labels_render_in_a_shown_viewer(make_napari_viewer, qtbot, disc_model):
    from napari_virtualstain.core.segmentation import get_segmenter

    rgb = disc_image((200, 200), CENTRES, RADIUS_PX)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(rgb, rgb=True, name="H&E")
    assert _canvas(viewer).max() > 200  # the image really renders (GL works)

    segmenter = get_segmenter("stardist", model=disc_model, model_mpp=0.5, tile_px=128)
    labels, steps = _segment_in_worker(qtbot, segmenter, rgb, 0.5)
    assert labels.max() == len(CENTRES)
    assert [s.done for s in steps if s.message.startswith("StarDist tile")] == list(range(4))

    layer = viewer.add_labels(labels, name="nuclei", opacity=1.0)
    shown = _canvas(viewer)
    layer.visible = False
    hidden = _canvas(viewer)
    changed = np.abs(shown - hidden).sum(-1) > 30
    # The labels cover ~9 discs of 200 px in a 200 x 200 image: about 4.5 % of the image.
    fraction = changed.sum() / (hidden.max(-1) > 40).sum()
    assert 0.02 < fraction < 0.10
    assert "tensorflow" not in sys.modules


@pytest.mark.slow
def test_tensorflow_reference_runs_beside_the_viewer(make_napari_viewer, disc_model):
    """The TF StarDist reference runs in a child while the viewer keeps rendering."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    from napari_virtualstain.core.segmentation._tf_safe import predict_stardist_tf
    from napari_virtualstain.core.segmentation.stardist import StarDistSegmenter, normalize

    rgb = disc_image((160, 160), [(40, 40), (40, 100), (100, 40), (110, 110)], 8)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(rgb, rgb=True)
    image = normalize(rgb, (40.0, 240.0))
    ref = predict_stardist_tf(disc_model, image)
    labels = StarDistSegmenter(model=disc_model, norm_range=(40.0, 240.0)).segment(rgb, 0.5)
    assert ref["labels"].max() == labels.max() == 4
    viewer.add_labels(labels)
    assert _canvas(viewer).max() > 200
    assert "tensorflow" not in sys.modules
