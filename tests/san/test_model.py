"""The SAN network: structure (Table II), determinism, gradients, contract checks."""

from __future__ import annotations

import pytest
import torch
import torchvision

from san import InputSpec, ModelConfig, build_model
from san.contract.spec import ContractError
from san.model.config import ConfigError
from san.model.context import SparseUpsample
from san.model.pretrained import PretrainedWeightsError, load_imagenet_backbone, torchvision_backbone_state

SMALL = InputSpec(height=64, width=32)


def small_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"backbone": "resnet18", "spec": SMALL, **kw})


def images(n: int, seed: int = 0, spec: InputSpec = SMALL) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, spec.height, spec.width), dtype=torch.uint8, generator=g)


def test_context_unit_parameters_match_table_ii() -> None:
    # Table II holds at any input size; the paper counts convolution weights only.
    model = build_model(ModelConfig(spec=SMALL))
    paper = {s: b.context.paper_parameter_count() for s, b in model.attention.items() if b.context is not None}
    assert paper == {"1": 507_904, "2": 2_031_616, "3": 8_126_464}
    assert sum(paper.values()) == 10_665_984
    assert round(sum(paper.values()) / 1e6, 2) == 10.67


def test_sparse_upsample_is_the_transposed_convolution_forward_and_backward() -> None:
    """Conv + zero interleave against torch's own ConvTranspose2d (stride 2, 1x1, output_padding 1)."""
    torch.manual_seed(0)
    up = SparseUpsample(6, 4)
    x = torch.randn(2, 6, 5, 3, requires_grad=True)
    reference = torch.nn.functional.conv_transpose2d(x, up.weight, stride=2, output_padding=1)
    out = up(x)
    assert out.shape == reference.shape == (2, 4, 10, 6)
    torch.testing.assert_close(out, reference)
    assert out[:, :, 1::2].abs().sum() == 0 and out[:, :, :, 1::2].abs().sum() == 0  # odd rows/columns
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(reference, (x, up.weight), grad)
    torch.testing.assert_close(torch.autograd.grad(out, (x, up.weight), grad), expected)
    with pytest.raises(ValueError, match="output_size"):
        up(x, output_size=[10, 6])


def test_context_units_only_on_stages_1_to_3() -> None:
    model = build_model(small_cfg())
    assert sorted(model.attention) == ["1", "2", "3", "4"]
    assert model.attention["4"].context is None
    assert all(model.attention[s].context is not None for s in "123")


def test_baseline_has_no_attention_and_head_dims() -> None:
    model = build_model(small_cfg(attention="none", hidden_dim=64, spec=InputSpec(64, 32, embedding_dim=16)))
    assert len(model.attention) == 0
    assert model.head[0].out_features == 64 and model.head[3].out_features == 16
    assert model.eval()(images(2)).shape == (2, 16)


def test_eval_is_deterministic_and_masks_are_hard_threshold() -> None:
    model = build_model(small_cfg(spec=InputSpec(64, 32, mask_threshold=0.45))).eval()
    x = images(3)
    with torch.no_grad():
        a, b = model(x, details=True), model(x, details=True)
    assert torch.equal(a.embeddings, b.embeddings)
    for m, pi in zip(a.masks, a.probs):
        assert torch.equal(m, (pi > 0.45).to(m.dtype))


def test_noise_free_masks_are_the_relaxed_median_at_the_trained_temperature() -> None:
    from san.model.attention import noise_free_mask
    from san.model.sampled import NoiseFreeMasks

    torch.manual_seed(0)
    model = build_model(small_cfg()).eval()
    model.set_temperature(0.9)
    x = images(3)
    with torch.no_grad():
        deployed = model(x)
        reference = NoiseFreeMasks(model)
        out = reference.san(x, details=True)
        # the same forward twice: equal up to float32 rounding (a kernel's path may depend on a buffer's alignment)
        assert torch.allclose(reference(x), out.embeddings, rtol=0, atol=1e-6 * float(out.embeddings.abs().max()))
    assert reference.spec == model.spec and not reference.training
    for m, pi in zip(out.masks, out.probs):
        assert torch.allclose(m, noise_free_mask(pi, 0.9))
    assert not torch.allclose(out.embeddings, deployed, atol=1e-3)


def test_train_mode_sampling_is_seeded() -> None:
    model = build_model(small_cfg()).train()
    x = images(4)

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return model(x)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_every_trainable_parameter_gets_a_gradient_in_one_train_step() -> None:
    torch.manual_seed(0)
    model = build_model(small_cfg()).train()
    out = model(images(4), details=True)
    loss = out.embeddings.pow(2).mean() + 0.1 * out.tv_penalty()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


def test_temperature_buffer_is_set_and_saved() -> None:
    model = build_model(small_cfg())
    model.set_temperature(0.7)
    taus = {k: v.item() for k, v in model.state_dict().items() if k.endswith("generator.tau")}
    assert len(taus) == 4 and all(t == pytest.approx(0.7) for t in taus.values())


def test_mask_threshold_follows_the_contract() -> None:
    model = build_model(small_cfg()).eval()
    model.set_mask_threshold(0.3)
    assert model.spec.mask_threshold == 0.3
    with torch.no_grad():
        out = model(images(2), details=True)
    assert torch.equal(out.masks[0], (out.probs[0] > 0.3).float())


@pytest.mark.parametrize("attention", ["sharp", "threshold", "soft", "power", "none"])
def test_the_contracts_threshold_is_the_one_the_masks_use_for_every_kind(attention: str, tmp_path) -> None:
    """A hard-mask kind deploys 1[pi > t] (sharp) or 1[pi >= lambda] (threshold): the contract
    records that t, also after a new threshold, and the exported graph's pi reproduces the
    model's masks with it; continuous kinds deploy no threshold."""
    import numpy as np
    import onnxruntime as ort

    from export.onnx_export import export_onnx
    from san.contract.artifact import INPUT_NAME, read_contract

    torch.manual_seed(0)
    model = build_model(small_cfg(attention=attention, threshold_lambda=0.25)).eval()
    hard = {g.hard_threshold for g in model.generators().values()} - {None}
    if attention in ("soft", "power", "none"):
        assert hard == set()
        return
    assert hard == {model.spec.mask_threshold} == {0.25 if attention == "threshold" else 0.5}
    model.set_mask_threshold(0.4)
    assert {g.hard_threshold for g in model.generators().values()} == {model.spec.mask_threshold} == {0.4}
    path = export_onnx(model, tmp_path / "model.onnx")
    threshold = read_contract(path).mask_threshold
    batch = images(3)
    with torch.no_grad():
        out = model(batch, details=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs = session.run(None, {INPUT_NAME: batch.numpy()})[1:]
    for pi, mask in zip(probs, out.masks):
        deployed = pi >= threshold if attention == "threshold" else pi > threshold
        flips = float(np.mean(deployed != mask.numpy().astype(bool)))
        assert threshold == 0.4 and flips < 1e-3  # only elements within rounding of the threshold may differ


def test_input_not_divisible_by_32_with_context_units_is_refused() -> None:
    with pytest.raises(ConfigError, match="divisible by 32"):
        ModelConfig(spec=InputSpec(height=100, width=50))
    ModelConfig(context_unit=False, spec=InputSpec(height=100, width=50))  # fine without units


def test_wrong_input_shape_is_a_contract_error() -> None:
    model = build_model(small_cfg()).eval()
    with pytest.raises(ContractError, match="expects N x 3 x 64 x 32"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_normalisation_happens_inside_the_model() -> None:
    model = build_model(small_cfg()).eval()
    x = images(2)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x.float()))


def test_torchvision_resnet50_weights_load_and_stage_outputs_match(tmp_path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    for m in reference.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(ModelConfig(spec=SMALL), pretrained=str(path)).eval()

    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        ref = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        ours = model.stem(x)
        assert torch.equal(ref, ours)
        for ref_stage, our_stage in zip(
            [reference.layer1, reference.layer2, reference.layer3, reference.layer4], model.stages
        ):
            ref, ours = ref_stage(ref), our_stage(ours)
            assert torch.equal(ref, ours)


def test_pretrained_file_that_does_not_fit_names_the_keys(tmp_path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match=r"layer|stages\.0\.0\.conv3"):
        load_imagenet_backbone(build_model(ModelConfig(spec=SMALL)), path)


def test_a_trained_backbone_written_in_torchvision_layout_loads_into_torchvision_and_back(tmp_path) -> None:
    torch.manual_seed(0)
    trained = build_model(ModelConfig(backbone="resnet18", spec=SMALL))
    for m in trained.modules():  # trained-looking BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = torchvision_backbone_state(trained)
    reference = torchvision.models.resnet18(weights=None)
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected  # torchvision's own ResNet-18
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    torch.manual_seed(1)
    fresh = build_model(ModelConfig(backbone="resnet18", spec=SMALL), pretrained=str(path))
    own = trained.state_dict()
    for key, value in fresh.state_dict().items():
        if key.startswith(("stem.", "stages.")):
            assert torch.equal(value, own[key]), key
    key = "attention.1.context.down.conv1.weight"  # attention blocks keep their own initialisation
    assert not torch.equal(fresh.state_dict()[key], own[key])
