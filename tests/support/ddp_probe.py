"""``san-train`` under a probe, for the multi-process tests: run it as ``python ddp_probe.py
SETTINGS_JSON`` or under ``torchrun``. After every optimisation step each rank appends one
JSON line to ``<probe>/rank<R>.jsonl``: the step's losses and SHA-256 digests of its
parameters and of its BatchNorm running statistics; rank 0 also saves its state dict and the
step's gradient (after DDP's averaging) as ``<probe>/step<N>.pt``.

SETTINGS_JSON holds the ``cpu-demo`` preset's overrides (``out``, ``root``, ``ids``,
``batch_p``, ``epochs``, ``resume``, ...), ``probe`` (the folder) and ``attention``
(``soft`` makes the masks deterministic, so that 1 and 2 processes see the same network).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from san import train as training
from san.training.presets import PRESETS


def digest(tensors: list[torch.Tensor]) -> str:
    return hashlib.sha256(torch.cat([t.detach().double().flatten() for t in tensors]).numpy().tobytes()).hexdigest()


def main() -> None:
    settings = json.loads(sys.argv[1])
    probe = Path(settings.pop("probe"))
    attention = settings.pop("attention", None)
    out, root, ids = settings.pop("out"), settings.pop("root"), settings.pop("ids")
    cfg = PRESETS["cpu-demo"].config(out, "synthetic", root, {"ids": ids}, workers=0, eval_every=0, progress=False,
                                     device="cpu", **settings)
    if attention:
        cfg = cfg.with_changes(model=replace(cfg.recipe.model, attention=attention))
    step = training._Trainer._step
    steps = [0]

    def probed(self: training._Trainer, *args: object) -> training.StepResult | None:
        result = step(self, *args)
        if result is not None:
            record = {"loss": result.loss, "triplet": result.triplet, "tv": result.tv,
                      "params": digest(list(self.raw.parameters())),
                      "bn": digest([b for name, b in self.raw.named_buffers() if "running" in name])}
            with open(probe / f"rank{self.ctx.rank}.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            steps[0] += 1
            if self.ctx.main:
                grads = {name: p.grad.detach().clone() for name, p in self.raw.named_parameters() if p.grad is not None}
                torch.save({"state": {k: v.detach().clone() for k, v in self.raw.state_dict().items()}, "grad": grads},
                           probe / f"step{steps[0]}.pt")
        return result

    training._Trainer._step = probed  # type: ignore[method-assign]
    probe.mkdir(parents=True, exist_ok=True)
    training.train(cfg)


if __name__ == "__main__":
    main()
