"""The context unit's two upsamplings: sparse (the literal 1x1 transposed convolution of stride 2)
and nearest (nearest x2, then the same 1x1 weights)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from san import InputSpec, ModelConfig, build_model, load_checkpoint, save_checkpoint
from san.data.synth import SynthParams, plan_images, render_image
from san.io.preprocess import resize_to_contract
from san.model.context import NearestUpsample, SparseUpsample
from support.looks_trained import looks_trained

SPEC = InputSpec(height=128, width=64)


def person_image() -> torch.Tensor:
    """One synthetic person as the contract feeds it (1 x 3 x 128 x 64, uint8)."""
    params = SynthParams(ids=2, height=128, width=64)
    picture = Image.open(io.BytesIO(render_image(params, plan_images(params)[0]))).convert("RGB")
    return torch.from_numpy(np.ascontiguousarray(resize_to_contract(picture, SPEC)))[None]


def cfg(upsample: str) -> ModelConfig:
    return ModelConfig(backbone="resnet18", spec=SPEC, cu_upsample=upsample)


def test_nearest_upsample_is_nearest_interpolation_of_the_1x1_map_eager_and_exported() -> None:
    torch.manual_seed(0)
    up = NearestUpsample(6, 4)
    x = torch.randn(2, 6, 5, 3, requires_grad=True)
    reference = F.interpolate(F.conv2d(x, up.weight.transpose(0, 1)), scale_factor=2, mode="nearest")
    grad = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, (x, up.weight), grad)
    out = up(x)
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(torch.autograd.grad(out, (x, up.weight), grad), expected)
    torch.testing.assert_close(up.as_conv_transpose()(x), reference)  # what export writes


def test_both_upsamplings_have_table_ii_parameters_under_the_same_keys() -> None:
    sparse, nearest = (build_model(ModelConfig(spec=SPEC, cu_upsample=u)) for u in ("sparse", "nearest"))  # ResNet-50
    count = {s: b.context.paper_parameter_count() for s, b in nearest.attention.items() if b.context is not None}
    assert count == {"1": 507_904, "2": 2_031_616, "3": 8_126_464}
    assert {k: v.shape for k, v in sparse.state_dict().items()} == {k: v.shape for k, v in nearest.state_dict().items()}
    assert isinstance(sparse.attention["1"].context.up, SparseUpsample)


def test_nearest_cu_masks_see_the_image_at_every_position_while_sparse_shares_one_pi() -> None:
    """On a real image: at the odd rows and columns, which the sparse upsampling never writes,
    pi is one value per channel (range exactly 0); with nearest it varies in every channel."""
    image = person_image()
    for upsample, structural in (("sparse", True), ("nearest", False)):
        torch.manual_seed(0)
        model = looks_trained(build_model(cfg(upsample)))
        with torch.no_grad():
            probs = model(image, details=True).probs
        for stage, pi in zip("123", probs[:3]):  # the blocks with a context unit
            odd = pi[0, :, 1::2, 1::2].flatten(1)  # C x (H/2 * W/2)
            spread = odd.amax(1) - odd.amin(1)
            if structural:
                assert torch.all(spread == 0), (upsample, stage)
            else:
                assert torch.all(spread > 0), (upsample, stage)
                every = pi[0].flatten(1)
                assert torch.all(every.amax(1) > every.amin(1)), (upsample, stage)


def test_a_checkpoint_from_before_the_option_loads_as_sparse_and_reproduces_its_embeddings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = looks_trained(build_model(cfg("sparse")))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["cu_upsample"]  # as written before the option existed
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    loaded, _ = load_checkpoint(old)
    assert loaded.cfg.cu_upsample == "sparse"
    image = person_image()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(image), model(image))


def test_an_unknown_upsampling_is_refused() -> None:
    with pytest.raises(ValueError, match="cu_upsample must be one of \\('sparse', 'nearest'\\), got 'bilinear'"):
        ModelConfig(cu_upsample="bilinear")
