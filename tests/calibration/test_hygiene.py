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
