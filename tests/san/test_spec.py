"""The input contract and the one decode + resize function."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from san.contract.spec import ContractError, InputSpec
from san.io.preprocess import ImageDecodeError, load_image


def test_json_round_trip_and_canonical_form() -> None:
    spec = InputSpec(height=128, width=64, mask_threshold=0.42, l2_normalize=True)
    assert InputSpec.from_json(spec.to_json()) == spec
    assert spec.to_json() == InputSpec.from_json(spec.to_json()).to_json()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"height": 1}', "missing"),
        ("[1, 2]", "must be an object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_contract_json_is_refused(text: str, match: str) -> None:
    with pytest.raises(ContractError, match=match):
        InputSpec.from_json(text)


def test_invalid_values_are_named() -> None:
    with pytest.raises(ContractError, match="mask_threshold"):
        InputSpec(mask_threshold=1.5)
    with pytest.raises(ContractError, match="interpolation"):
        InputSpec(interpolation="area")


@pytest.mark.parametrize(("changes", "message"), [
    ({"height": "256"}, "height must be an integer, got '256'"),
    ({"width": 2049}, "width 2049 is over the limit of 2048 (san.contract.limits.MAX_IMAGE_SIDE; SAN_MAX_IMAGE_SIDE raises it)"),
    ({"height": 10**6, "width": 10**6},
     "height 1000000 is over the limit of 2048 (san.contract.limits.MAX_IMAGE_SIDE; SAN_MAX_IMAGE_SIDE raises it); width 1000000 is over"),
    ({"embedding_dim": True}, "embedding_dim must be an integer, got True"),
    ({"embedding_dim": 16385},
     "embedding_dim 16385 is over the limit of 16384 (san.contract.limits.MAX_EMBEDDING_DIM; SAN_MAX_EMBEDDING_DIM raises it)"),
    ({"mean": ["a", 0, 0]}, "mean, std and mask_threshold must be finite numbers"),
    ({"std": [1.0, float("nan"), 1.0]}, "mean, std and mask_threshold must be finite numbers"),
    ({"mask_threshold": "0.5"}, "mean, std and mask_threshold must be finite numbers"),
    ({"l2_normalize": "yes"}, "l2_normalize must be true or false"),
])
def test_a_contract_that_asks_for_too_much_or_the_wrong_type_is_refused_by_name(changes: dict, message: str) -> None:
    data = {**InputSpec().to_dict(), **changes}
    with pytest.raises(ContractError, match=re.escape(message)):
        InputSpec.from_dict(data)
    assert InputSpec.from_dict({**InputSpec().to_dict(), "height": 2048, "embedding_dim": 16384}).height == 2048


def test_a_model_config_that_asks_for_a_huge_head_is_refused_before_building() -> None:
    from san.model.config import ConfigError, ModelConfig

    with pytest.raises(ConfigError, match=re.escape("hidden_dim 1000000 is over the limit of 65536")):
        ModelConfig(hidden_dim=10**6)
    with pytest.raises(ConfigError, match="threshold_lambda must be a number"):
        ModelConfig(threshold_lambda="0.3")  # type: ignore[arg-type]


def test_batch_shape_check() -> None:
    spec = InputSpec(height=64, width=32)
    spec.check_batch_shape((5, 3, 64, 32))
    with pytest.raises(ContractError, match="N x 3 x 64 x 32"):
        spec.check_batch_shape((5, 64, 32, 3))


def test_load_image_resizes_to_contract_as_pil_bilinear(tmp_path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (90, 40, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    spec = InputSpec(height=64, width=32)
    out = load_image(path, spec)
    expected = np.asarray(Image.fromarray(pixels).resize((32, 64), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert out.dtype == np.uint8 and out.shape == (3, 64, 32)
    assert np.array_equal(out, expected)


def test_grayscale_and_rgba_become_rgb(tmp_path) -> None:
    Image.new("L", (8, 16), 77).save(tmp_path / "g.png")
    Image.new("RGBA", (8, 16), (10, 20, 30, 255)).save(tmp_path / "a.png")
    spec = InputSpec(height=32, width=32)
    assert (load_image(tmp_path / "g.png", spec) == 77).all()
    assert load_image(tmp_path / "a.png", spec)[:, 0, 0].tolist() == [10, 20, 30]


def test_undecodable_file_names_the_file(tmp_path) -> None:
    bad = tmp_path / "text.jpg"
    bad.write_text("hello")
    with pytest.raises(ImageDecodeError, match="text.jpg"):
        load_image(bad, InputSpec())


def test_contract_and_preprocessing_import_without_torch() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import san, san.contract.spec, san.io.preprocess\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
