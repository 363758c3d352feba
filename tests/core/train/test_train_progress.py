"""TrainProgress is a core.progress.Progress: any Progress consumer (drain, the CLI's bar) works."""

from __future__ import annotations

import pytest

from napari_virtualstain.core.progress import Progress, drain
from napari_virtualstain.core.train.common import TrainProgress


def test_train_progress_is_a_progress_of_the_epoch():
    p = TrainProgress.at("train", 1, 4, 3, 12, {"cycle": 0.5, "ssim": 0.25})
    assert isinstance(p, Progress)
    assert (p.done, p.total, p.step, p.steps_per_epoch) == (3, 12, 3, 12)
    assert p.fraction == pytest.approx(0.25)
    assert p.message == "epoch 2/4 cycle=0.500 ssim=0.250"
    end = TrainProgress.at("epoch", 1, 4, 12, 12, metrics={"rec_a_ssim": 0.8})
    assert end.phase == "epoch" and end.fraction == 1.0 and end.metrics["rec_a_ssim"] == 0.8
    with pytest.raises(ValueError, match=">= 0"):
        TrainProgress.at("train", 0, 1, -1, 12)


def test_a_trainer_loop_drains_into_a_progress_consumer():
    from napari_virtualstain.cli.progress import tqdm_progress

    def fit():
        for step in range(1, 4):
            yield TrainProgress.at("train", 0, 1, step, 3, {"g": 1.0 / step})
        yield TrainProgress.at("epoch", 0, 1, 3, 3, metrics={"epoch": 1})
        return "done"

    seen = []
    with tqdm_progress("training", quiet=False) as show:

        def both(p):
            show(p)
            seen.append((p.done, p.total, p.phase))

        assert drain(fit(), both) == "done"
    assert seen == [(1, 3, "train"), (2, 3, "train"), (3, 3, "train"), (3, 3, "epoch")]
