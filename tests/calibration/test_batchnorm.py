"""BatchNorm re-estimation under the deployed masks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from calibration.batchnorm import reestimate_batchnorm
from calibration.hygiene import folder_images
from san.io.preprocess import load_image
from san.model.network import SAN, SANOutput


def batchnorm_inputs(model: SAN, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], SANOutput]:
    """Every BatchNorm's input and every block's mask in one forward pass with the BatchNorms
    normalising by the batch and the masks deterministic."""
    net = copy.deepcopy(model).eval()
    inputs: dict[str, torch.Tensor] = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            module.train()
            module.register_forward_hook(lambda _m, args, _out, name=name: inputs.__setitem__(name, args[0].detach()))
    with torch.no_grad():
        output = net(images, details=True)
    return inputs, output


def test_running_statistics_are_those_of_the_batch_under_the_deployed_masks(fp32_model: SAN, synth: Path) -> None:
    images = folder_images(synth / "bounding_box_train", "--images")[:12]
    batch = torch.from_numpy(np.stack([load_image(p, fp32_model.spec) for p in images]))
    expected, output = batchnorm_inputs(fp32_model, batch)
    for m, pi in zip(output.masks, output.probs):
        assert torch.equal(m, (pi > fp32_model.spec.mask_threshold).to(m.dtype))  # deployed, not sampled
    model = copy.deepcopy(fp32_model)
    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(("running_mean", "running_var",
                                                                                       "num_batches_tracked"))}
    assert reestimate_batchnorm(model, images, batch_size=len(images)) == 12
    assert not model.training
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())  # only the statistics moved
    norms = dict(model.named_modules())
    assert len(expected) > 20
    for name, x in expected.items():
        dims = [0, 2, 3] if x.dim() == 4 else [0]
        torch.testing.assert_close(norms[name].running_mean, x.mean(dims), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norms[name].running_var, x.var(dims, unbiased=True), rtol=1e-4, atol=1e-5)
        assert norms[name].momentum == 0.1  # restored


def test_statistics_average_over_batches_whatever_their_split(fp32_model: SAN, synth: Path) -> None:
    """momentum None: the plain average of the batches' statistics, so two batches of 6 give the
    mean of their two means."""
    images = folder_images(synth / "bounding_box_train", "--images")[:12]
    halves = [copy.deepcopy(fp32_model) for _ in range(2)]
    for model, part in zip(halves, (images[:6], images[6:])):
        reestimate_batchnorm(model, part)
    split = copy.deepcopy(fp32_model)
    reestimate_batchnorm(split, images, batch_size=6)
    a, b, both = (m.stem[1].running_mean for m in (*halves, split))
    torch.testing.assert_close(both, (a + b) / 2)
