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


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_distribution("napari-virtualstain")


def test_reader_patterns_match_what_get_reader_accepts():
    from napari_virtualstain.core.io import SUPPORTED_SUFFIXES

    (reader,) = _manifest().contributions.readers
    patterns = set(reader.filename_patterns)
    assert patterns == {f"*{s}" for s in SUPPORTED_SUFFIXES}
    assert reader.accepts_directories  # OME-Zarr folders


def test_writers_and_hub_categories():
    manifest = _manifest()
    writers = {w.command.split(".")[-1]: w for w in manifest.contributions.writers}
    assert writers["write_labels"].layer_types == ["labels"]
    assert ".geojson" in writers["write_shapes"].filename_extensions
    assert ".zarr" in writers["write_image"].filename_extensions
    assert {"Measurement", "Annotation", "Registration"} <= set(manifest.categories)


def test_project_urls_and_classifiers():
    from importlib.metadata import metadata

    meta = metadata("napari-virtualstain")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Source Code", "Bug Tracker", "Documentation", "User Support"} <= set(urls)
    assert "Framework :: napari" in meta.get_all("Classifier")
