"""Calibration-set hygiene: no evaluation image, by path or by content; seeded, recorded sampling."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from calibration.hygiene import CalibrationOverlapError, folder_images, select_calibration_set
from san.data.registry import load_dataset


def test_calibrating_on_evaluation_images_by_path_is_refused(synth: Path) -> None:
    dataset = load_dataset("synthetic", synth, verbose=False)
    with pytest.raises(CalibrationOverlapError) as refused:
        select_calibration_set(synth / "query", 8, 0, dataset=dataset)
    message = str(refused.value)
    total = len(folder_images(synth / "query", "--images"))
    assert f"{total} of {total} calibration images" in message and "same path" in message
    assert message.count("==") == 5 and f"and {total - 5} more" in message  # a few offenders, then the count


def test_a_renamed_copy_of_a_gallery_image_is_refused_by_content(synth: Path, tmp_path: Path) -> None:
    pool = tmp_path / "calib"
    shutil.copytree(synth / "bounding_box_train", pool)
    gallery_image = folder_images(synth / "bounding_box_test", "--exclude")[3]
    shutil.copy(gallery_image, pool / "renamed.jpg")
    with pytest.raises(CalibrationOverlapError) as refused:
        select_calibration_set(pool, 8, 0, exclude=[synth / "bounding_box_test"])
    assert "1 of" in str(refused.value) and "renamed.jpg" in str(refused.value) and "same content" in str(refused.value)
    (pool / "renamed.jpg").unlink()
    assert len(select_calibration_set(pool, 8, 0, exclude=[synth / "bounding_box_test", synth / "query"]).images) == 8


def test_sampling_is_deterministic_and_recorded(synth: Path) -> None:
    dataset = load_dataset("synthetic", synth, verbose=False)
    first = select_calibration_set(synth / "bounding_box_train", 10, 7, dataset=dataset)
    assert first == select_calibration_set(synth / "bounding_box_train", 10, 7, dataset=dataset)
    other = select_calibration_set(synth / "bounding_box_train", 10, 8, dataset=dataset)
    assert first.images != other.images and len(set(first.images)) == 10
    assert first.sampling() | {"seed": 7, "num_images": 10} == first.sampling()
    assert first.evaluation_images == len(dataset.query) + len(dataset.gallery)


def test_the_evaluation_count_says_where_it_came_from_and_counts_each_image_once(synth: Path) -> None:
    """A folder holds every image file; the loader leaves out Market-1501's junk images (pid -1):
    the two counts differ by exactly those files, and the line says which one it is."""
    dataset = load_dataset("synthetic", synth, verbose=False)
    folders = [synth / "query", synth / "bounding_box_test"]
    files = [p for folder in folders for p in folder_images(folder, "--exclude")]
    junk = [p for p in files if p.name.startswith("-1_")]
    assert junk, "the synthetic set has junk images, as Market-1501 does"
    by_folder = select_calibration_set(synth / "bounding_box_train", 4, 0, exclude=folders)
    by_loader = select_calibration_set(synth / "bounding_box_train", 4, 0, dataset=dataset)
    both = select_calibration_set(synth / "bounding_box_train", 4, 0, exclude=folders, dataset=dataset)
    assert by_folder.evaluation_images == len(files) and by_loader.evaluation_images == len(files) - len(junk)
    assert both.evaluation_images == len(files)  # the loader's images are among the folders' files: once each
    assert by_folder.render().endswith(f"no overlap with {len(files)} evaluation images (every image file under "
                                       "--exclude)")
    assert "synthetic's query and gallery as its loader lists them, without the images it drops" in by_loader.render()
