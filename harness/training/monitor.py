"""What a training run shows while it runs: a progress bar and TensorBoard scalars
(``train/<name>`` in ``RUN_DIR/tensorboard``), written by the main process only."""
from __future__ import annotations

from pathlib import Path

from harness.core.distributed import Dist


class TrainLog:
    def __init__(self, run_dir: Path, start: int, total: int, d: Dist, progress: bool, desc: str):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm
        self.is_main = d.is_main
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard")) if d.is_main else None
        self.bar = tqdm(total=total, initial=start, disable=not (progress and d.is_main), desc=desc,
                        dynamic_ncols=True)

    def scalars(self, step: int, values: dict[str, float], postfix: dict[str, str]) -> None:
        """Log ``values`` as ``train/<name>`` at global step ``step``; show ``postfix`` on the bar."""
        if not self.is_main:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"train/{k}", v, step)
        self.bar.set_postfix(**postfix)

    def advance(self) -> None:
        if self.is_main:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
