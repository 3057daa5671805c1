"""Process bodies for the two-process (gloo) tests; imported by torch.multiprocessing.spawn."""

import os

import torch
import torch.distributed as dist

from usdrl.nn.encoders import SkeletonModel
from usdrl.settings.sections import LossSection, ModelSection, PretrainSection
from usdrl.training.pretrain import PretrainingObjective, loss_terms, pretrain


def make_views(batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(123)
    return torch.randn((4, batch, 3, 64, 25, 2), generator=generator)


def loss_and_gradients(views: torch.Tensor, distributed: bool) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = SkeletonModel(ModelSection(hidden_size=16, drop_path=0.0))
    objective = PretrainingObjective(model)
    if distributed:
        objective = torch.nn.parallel.DistributedDataParallel(objective)
    terms = loss_terms(objective(views, "joint"), LossSection())
    terms["total"].backward()
    return terms["total"].item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def step_worker(rank: int, world_size: int, init_file: str, result_path: str, batch: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    views = make_views(batch * world_size)[:, rank * batch:(rank + 1) * batch]
    loss, gradients = loss_and_gradients(views, distributed=True)
    if rank == 0:
        torch.save({"loss": loss, "gradients": gradients}, result_path)
    dist.destroy_process_group()


def pretrain_worker(rank: int, world_size: int, port: int, data_root: str, out_dir: str, alpha: float = 0.5) -> None:
    os.environ.update({"WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    pretrain(data_root, "xview", out_dir, ModelSection(hidden_size=16, num_layers=1, alpha=alpha),
             settings=PretrainSection(epochs=1, batch_size=8, workers=0, device="cpu", log_every=0), progress=False)
