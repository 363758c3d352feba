"""The ``tiles``, ``pairs`` and ``train`` commands, end to end on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from napari_virtualstain.cli import main
from tests.support.train_tiles import colour_transform, texture


def write_tiff(path, rgb, mpp):
    import tifffile

    meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}
    tifffile.imwrite(path, rgb, photometric="rgb", metadata=meta, ome=True)
    return path


def test_tiles_command_writes_tiles_and_index(tmp_path):
    img = np.full((256, 256, 3), 245, np.uint8)
    img[:128] = texture(0, 128).repeat(2, axis=1)[:, :256]
    slide = write_tiff(tmp_path / "s.ome.tif", img, 0.25)
    args = ["tiles", str(slide), "--out", str(tmp_path / "t"), "--size", "64", "--overlap", "0",
            "--mpp", "0.5", "--min-tissue", "0.5", "-q"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # 128 x 128 output px -> 2 x 2 grid, the top row is tissue
    assert "2 tiles kept" in result.output
    assert len(list((tmp_path / "t").glob("*.png"))) == 2
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "finished tile set" in again.output
    assert "--overwrite" in again.output and "overwrite=True" not in again.output


def test_pairs_command_filters_by_ssim(tmp_path):
    he = np.concatenate([texture(1, 128), texture(2, 128)], axis=1)
    ihc = colour_transform(he)
    ihc[:, 128:] = colour_transform(texture(9, 128))  # right half: a different section
    write_tiff(tmp_path / "he.ome.tif", he, 0.5)
    write_tiff(tmp_path / "ihc.ome.tif", ihc, 0.5)
    result = CliRunner().invoke(main, [
        "pairs", str(tmp_path / "he.ome.tif"), str(tmp_path / "ihc.ome.tif"), "--out",
        str(tmp_path / "bci"), "--size", "64", "--test-fraction", "0", "--no-register", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 pairs with SSIM > 0.4" in result.output  # the 4 left-half tiles of 8
    assert len(list((tmp_path / "bci" / "IHC" / "train").glob("*.png"))) == 4


@pytest.mark.slow
def test_train_cyclegan_command_runs_resumes_and_registers(
    tmp_path, unpaired, monkeypatch, one_thread
):
    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_MODELS", str(tmp_path / "models"))
    a, b = unpaired.train_a[0].parent, unpaired.train_b[0].parent
    args = ["train", "cyclegan", "--a", str(a), "--b", str(b), "--out", str(tmp_path / "run"),
            "--variant", "plain", "--epochs", "1", "--steps-per-epoch", "2", "--tile-px", "32",
            "--batch-size", "2", "--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--device", "cpu",
            "-q"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1: " in result.output and "rec_a_ssim" in result.output
    assert (tmp_path / "models" / "run-he2ki67" / "card.json").is_file()
    from napari_virtualstain.core.models import find_model

    assert find_model("run-ki672he") == tmp_path / "models" / "run-ki672he"
    # same command, more epochs: resumes; the registered name exists -> clear error
    assert args[10] == "--epochs"
    more = CliRunner().invoke(main, [*args[:11], "2", *args[12:]])
    assert "resuming" in more.output and "epoch 2: " in more.output
    assert more.exit_code != 0 and "already" not in more.output and "registered at" in more.output


@pytest.mark.slow
def test_train_pix2pix_command(tmp_path, paired, monkeypatch, one_thread):
    from napari_virtualstain.core.train.layouts import PairedSplit, write_bci_layout

    monkeypatch.setenv("NAPARI_VIRTUALSTAIN_MODELS", str(tmp_path / "models"))
    write_bci_layout(PairedSplit(paired.train, paired.test), tmp_path / "bci")
    result = CliRunner().invoke(main, [
        "train", "pix2pix", "--data", str(tmp_path / "bci"), "--out", str(tmp_path / "p2p"),
        "--attention", "--epochs", "1", "--steps-per-epoch", "2", "--tile-px", "32", "--ngf", "4",
        "--n-blocks", "1", "--ndf", "4",
        "--pyramid-weights", "25,25,25", "--device", "cpu", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "test_psnr" in result.output
    assert (tmp_path / "models" / "p2p-he2ki67" / "weights.safetensors").is_file()
    bad = CliRunner().invoke(main, ["train", "pix2pix", "--data", str(tmp_path), "--out", "x"])
    assert bad.exit_code != 0 and "HE/train" in bad.output


def index_folder(folder, files, mpp):
    """An index.csv for ``files`` (48 px tiles side by side, one slide), as ``tiles`` writes."""
    from napari_virtualstain.core.train.tiles_out import INDEX_FIELDS

    rows = [f"{p.name},{folder.name}.svs,0,0,{i * 48},48,{mpp},1.0" for i, p in enumerate(files)]
    (folder / "index.csv").write_text("\n".join([",".join(INDEX_FIELDS), *rows]) + "\n")
    return folder


TINY_ARGS = ["--variant", "plain", "--epochs", "1", "--steps-per-epoch", "2", "--tile-px", "32",
             "--batch-size", "2", "--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--device",
             "cpu", "--no-register", "-q"]  # fmt: skip


def cyclegan_args(a, b, out, *extra):
    return ["train", "cyclegan", "--a", str(a), "--b", str(b), "--out", str(out), *TINY_ARGS,
            *extra]  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lambda-cycle", "inf"], "lambda_cycle must be a finite number"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--tile-px", "0"], "tile_px must be >= 24"),
        (["--tile-px", "64"], "smaller than the 64 px training crop"),
    ],
)
def test_train_refuses_bad_settings_as_usage_errors(tmp_path, unpaired, extra, message):
    a, b = unpaired.train_a[0].parent, unpaired.train_b[0].parent
    result = CliRunner().invoke(main, cyclegan_args(a, b, tmp_path / "run", *extra))
    assert result.exit_code == 2, result.output
    assert message in result.output and "please report" not in result.output
    assert not (tmp_path / "run").exists()


def test_train_takes_the_pixel_size_from_the_tile_index(tmp_path, unpaired, one_thread):
    from napari_virtualstain.core.models import ModelCard

    a = index_folder(unpaired.train_a[0].parent, unpaired.train_a, 1.0)
    b = index_folder(unpaired.train_b[0].parent, unpaired.train_b, 1.0)
    wrong = CliRunner().invoke(main, cyclegan_args(a, b, tmp_path / "r0", "--mpp", "0.5"))
    assert wrong.exit_code == 2 and "contradicts" in wrong.output
    result = CliRunner().invoke(main, cyclegan_args(a, b, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    card = ModelCard.from_json(tmp_path / "run" / "best" / "he2ki67" / "card.json")
    assert card.mpp == 1.0
    assert "held out by spatial blocks" in card.training_data and "trainA.svs" in card.training_data
    index_folder(b, unpaired.train_b, 0.5)
    mixed = CliRunner().invoke(main, cyclegan_args(a, b, tmp_path / "r2"))
    assert mixed.exit_code == 2 and "different pixel sizes" in mixed.output


def test_a_diverging_run_fails_and_saves_no_weights(tmp_path, unpaired, monkeypatch, one_thread):
    from napari_virtualstain.core.train.cyclegan import CycleGANTrainer

    step = CycleGANTrainer.train_step

    def diverging(self, *batches):
        return {**step(self, *batches), "cycle": float("nan")}

    monkeypatch.setattr(CycleGANTrainer, "train_step", diverging)
    a, b = unpaired.train_a[0].parent, unpaired.train_b[0].parent
    result = CliRunner().invoke(main, cyclegan_args(a, b, tmp_path / "run"))
    assert result.exit_code == 1, result.output
    assert "diverged at epoch 1, step 1" in result.output and "cycle=nan" in result.output
    assert not (tmp_path / "run" / "best").exists()


def test_ctrl_c_saves_the_step_and_the_rerun_continues_there(
    tmp_path, unpaired, monkeypatch, one_thread
):
    import signal

    from napari_virtualstain.core.train.cyclegan import CycleGANTrainer

    step = CycleGANTrainer.train_step

    def interrupted(self, *batches):
        if self.global_step == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C during the second step
        return step(self, *batches)

    monkeypatch.setattr(CycleGANTrainer, "train_step", interrupted)
    a, b = unpaired.train_a[0].parent, unpaired.train_b[0].parent
    args = cyclegan_args(a, b, tmp_path / "run", "--steps-per-epoch", "3")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "interrupted at epoch 1, step 2" in result.output
    monkeypatch.setattr(CycleGANTrainer, "train_step", step)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "resuming" in again.output and "epoch 1, step 2" in again.output
