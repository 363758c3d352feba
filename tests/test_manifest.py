from importlib.metadata import entry_points


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-virtualstain")
    manifest.validate_imports()
    assert manifest.name == "napari-virtualstain"
    assert {r.command for r in manifest.contributions.readers} == {"napari-virtualstain.read_slide"}


def test_npe2_validate_cli():
    import subprocess
    import sys
    from pathlib import Path

    import napari_virtualstain

    yaml = Path(napari_virtualstain.__file__).with_name("napari.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", str(yaml)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_is_registered_by_entry_point():
    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-virtualstain"]
    assert eps and eps[0].value == "napari_virtualstain:napari.yaml"
