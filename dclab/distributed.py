"""Retraining on several processes or GPUs with PyTorch DistributedDataParallel (DDP), launched by ``torchrun``.

The two retraining stages of Deep Compression, under DDP:

- ``--stage prune``: prune to the preset's kept fractions
  (:func:`dclab.prune.prune_to_preset`), then retrain with the masks
  enforced after every step (:func:`dclab.prune.enforce_masks`, which also
  clears the optimizer's momentum at pruned weights).
- ``--stage quantize``: start from a pruned checkpoint, share weights by
  k-means (:func:`dclab.quantize.quantize_model`), then fine-tune the
  centroids (:func:`dclab.quantize.codebook_parameters`) with
  :func:`dclab.quantize.sync_codebooks` after every step.

Why this is correct under DDP: every rank builds the same model and runs the
same deterministic pruning or k-means. DDP's constructor then broadcasts
rank 0's parameters and buffers (``weight_mask``, ``weight_codebook``,
``weight_codes``) to the others, so all ranks start identical. The centroids are ``nn.Parameter`` objects (``weight_centroids``)
registered before DDP wraps the model, so DDP all-reduces their gradients
like any other parameter's. Every rank then applies the same update, and the
masks and codes stay identical because training never changes them. A digest of
every mask, codebook, code and weight is compared across ranks after set-up
and after training, and a mismatch stops the run.

Launch, for example on one node with 8 GPUs (``--batch-size`` is per process)::

    torchrun --standalone --nproc_per_node=8 -m dclab.distributed --model alexnet \\
        --weights pretrained --data /data/imagenet/train --val /data/imagenet/val \\
        --stage prune --epochs 10 --lr 0.001 --batch-size 64 --out alexnet-pruned.pt
    torchrun --standalone --nproc_per_node=8 -m dclab.distributed --model alexnet \\
        --weights alexnet-pruned.pt --data /data/imagenet/train --val /data/imagenet/val \\
        --stage quantize --epochs 3 --lr 0.0001 --batch-size 64 --out alexnet-quantized.pt \\
        --dcz alexnet.dcz

Without ``torchrun`` (no ``RANK``/``WORLD_SIZE`` in the environment) it runs
as a single process.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dclab import config, prune, quantize
from dclab.models import MODEL_NAMES, build_model

__all__ = [
    "DistributedContext",
    "init_distributed",
    "replica_digest",
    "check_replicas",
    "image_folder",
    "prepare_model",
    "train_ddp",
    "main",
]

log = logging.getLogger("dclab.distributed")

STAGES = ("prune", "quantize")
_COMPRESSION_STATE = ("weight_mask", "weight_codebook", "weight_codes")


@dataclass(frozen=True)
class DistributedContext:
    """The process's place in the job.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes (1 when not distributed).
        local_rank: rank on this node, which picks the GPU.
        device: this process's device.
        distributed: whether a process group was initialized.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which logs, evaluates and writes files."""
        return self.rank == 0


def init_distributed(backend: str = "auto", device: str = "auto") -> DistributedContext:
    """Join the process group that ``torchrun`` set up through ``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR``.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``"auto"`` (nccl on CUDA, else gloo).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (``cuda:LOCAL_RANK`` when
            CUDA is available, else cpu).

    Raises:
        ValueError: CUDA was requested but is unavailable, or nccl on CPU.
    """
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # NOTE: only the CPU/gloo path has been run (tests/test_distributed.py); the cuda/nccl path is untested.
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch sees no CUDA GPU; use --device cpu")
    chosen = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(chosen)
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl" and not use_cuda:
        raise ValueError("the nccl backend needs CUDA devices; use --backend gloo on CPU")
    distributed = "RANK" in os.environ and world_size > 1
    if distributed:
        dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(rank, world_size, local_rank, chosen, distributed)


def replica_digest(model: nn.Module) -> dict[str, str]:
    """Return SHA-256 digests of the model's masks, codebooks, codes and weights, by kind.

    Two replicas agree exactly when their digests are equal.
    """
    hashes = {kind: hashlib.sha256() for kind in ("weight_mask", "weight_codebook", "weight_codes", "parameters")}
    for key, tensor in model.state_dict().items():
        kind = key.rpartition(".")[2]
        target = hashes[kind] if kind in _COMPRESSION_STATE else hashes["parameters"]
        target.update(key.encode())
        target.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())
    return {kind: digest.hexdigest()[:16] for kind, digest in hashes.items()}


def check_replicas(model: nn.Module, context: DistributedContext, when: str) -> dict[str, str]:
    """Compare :func:`replica_digest` across ranks; raise when any rank differs.

    Raises:
        RuntimeError: the replicas differ; the message names the kind of state.
    """
    digest = replica_digest(model)
    if not context.distributed:
        return digest
    gathered: list[dict[str, str] | None] = [None] * context.world_size
    dist.all_gather_object(gathered, digest)
    for kind in digest:
        values = {rank_digest[kind] for rank_digest in gathered}
        if len(values) != 1:
            raise RuntimeError(f"replicas differ in {kind} {when}: digests {sorted(values)}")
    if context.is_main:
        log.info("replicas identical %s across %d ranks: %s", when, context.world_size, digest)
    return digest


def image_folder(folder: str | Path, network: str, train: bool = True) -> Dataset:
    """Load an ImageFolder training set with the network's input transform.

    AlexNet and VGG-16: ImageNet's random-resized 224 crop and flip for
    training, resize 256 / center crop 224 otherwise, ImageNet normalization.
    LeNets: grayscale, resized to 28x28, MNIST normalization.

    Raises:
        dclab.data.DatasetError: the folder is missing or not in ImageFolder layout.
    """
    from torchvision import datasets, transforms

    from dclab.data import IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD, DatasetError

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"training folder {folder} does not exist; give a folder in ImageFolder layout")
    if network in ("alexnet", "vgg16"):
        crop = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()] if train else [
            transforms.Resize(256), transforms.CenterCrop(224)]
        transform = transforms.Compose([*crop, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    else:
        transform = transforms.Compose([
            transforms.Grayscale(1), transforms.Resize((28, 28)), transforms.ToTensor(),
            transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)),
        ])
    try:
        return datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as error:
        raise DatasetError(f"{folder} is not in ImageFolder layout (one sub-folder per class): {error}") from error


def _load_start_model(network: str, weights: str) -> nn.Module:
    """Build the starting model: dense weights, or a stage checkpoint with masks or codebooks."""
    if weights in ("random", "pretrained", "trained"):
        return build_model(network, weights=weights)
    from dclab.pipeline import load_stage_checkpoint

    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; give a state dict or random/pretrained/trained")
    return load_stage_checkpoint(network, path)


def prepare_model(model: nn.Module, stage: str, preset: str = "paper", init: str = "linear") -> list[nn.Parameter]:
    """Apply the stage's compression step and return the parameters to train.

    ``prune``: prune to the preset's kept fractions (a pruned checkpoint is
    pruned further only where the preset requests more). ``quantize``:
    k-means on each layer with the preset's bits, then start centroid
    fine-tuning, so that the centroids and the biases are trained.

    Raises:
        ValueError: unknown stage.
    """
    if stage == "prune":
        prune.prune_to_preset(model, preset)
        prune.enforce_masks(model)
    elif stage == "quantize":
        quantize.quantize_model(model, preset, init=init)
        quantize.codebook_parameters(model)
    else:
        raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    return [p for p in model.parameters() if p.requires_grad]


def _after_step(stage: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    if stage == "prune":
        prune.enforce_masks(model, optimizer)
    else:
        quantize.sync_codebooks(model)


def train_ddp(
    ddp_model: DistributedDataParallel | nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    context: DistributedContext,
    after_step,
    max_steps: int | None = None,
) -> list[dict[str, float]]:
    """Train with cross-entropy and a cosine learning rate; return rank 0's per-epoch loss and accuracy.

    The loss and accuracy are averaged over all ranks. ``after_step`` runs
    after every optimizer step on every rank. ``max_steps`` caps the steps
    per epoch (for smoke tests).
    """
    steps_per_epoch = len(loader) if max_steps is None else min(len(loader), max_steps)
    total_steps = max(1, epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    history = []
    for epoch in range(1, epochs + 1):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
        ddp_model.train()
        totals = torch.zeros(3, dtype=torch.float64, device=context.device)  # loss sum, correct, seen
        start = time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            images, labels = images.to(context.device), labels.to(context.device)
            optimizer.zero_grad(set_to_none=True)
            logits = ddp_model(images)
            loss = F.cross_entropy(logits, labels)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            after_step()
            scheduler.step()
            totals += torch.tensor([loss.item() * len(labels), (logits.argmax(1) == labels).sum().item(), len(labels)],
                                   dtype=torch.float64, device=context.device)
        if context.distributed:
            dist.all_reduce(totals)
        loss_sum, correct, seen = totals.tolist()
        row = {"epoch": epoch, "loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
               "seconds": time.perf_counter() - start}
        if context.is_main:
            log.info("epoch %d/%d: loss %.4f, train top-1 %.2f%% over %d images, %.1f s", epoch, epochs,
                     row["loss"], 100 * row["train_top1"], int(seen), row["seconds"])
        history.append(row)
    return history


def _evaluate_main(model: nn.Module, folder: str | None, network: str, context: DistributedContext, what: str) -> None:
    """Evaluate top-1 and top-5 on rank 0 while the other ranks wait."""
    if folder is not None and context.is_main:
        from dclab.data import make_loader
        from dclab.train import evaluate

        result = evaluate(model, make_loader(image_folder(folder, network, train=False), 64), context.device, (1, 5))
        log.info("%s: top-1 %.2f%%, top-5 %.2f%% on %d images", what, 100 * result["top1"], 100 * result["top5"],
                 result["count"])
    if context.distributed:
        dist.barrier()


def run(args: argparse.Namespace) -> dict[str, str]:
    """Run one retraining stage; return this rank's final replica digest."""
    if config.quick_mode() and args.model in ("alexnet", "vgg16"):
        raise ValueError("quick mode (DCLAB_QUICK=1) does no retraining at full scale; unset DCLAB_QUICK")
    context = init_distributed(args.backend, args.device)
    try:
        return _run_stage(args, context)
    finally:
        if context.distributed:
            dist.destroy_process_group()


def _run_stage(args: argparse.Namespace, context: DistributedContext) -> dict[str, str]:
    torch.manual_seed(args.seed)  # the same random weights on every rank
    model = _load_start_model(args.model, args.weights).to(context.device)
    _evaluate_main(model, args.val, args.model, context, "before the stage")
    params = prepare_model(model, args.stage, args.preset, args.init)
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    # DDP's constructor broadcasts rank 0's parameters and buffers (masks, codebooks, codes) to every
    # rank. Training changes no buffer, so the broadcast before every forward pass is switched off.
    ddp_model = DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False) \
        if context.distributed else model
    check_replicas(model, context, "after set-up")

    dataset = image_folder(args.data, args.model, train=True)
    sampler = DistributedSampler(dataset, context.world_size, context.rank, shuffle=True, seed=args.seed) \
        if context.distributed else None
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
                        num_workers=args.workers, drop_last=context.distributed,
                        generator=torch.Generator().manual_seed(args.seed))
    epochs = config.limit_epochs(args.epochs)
    after_step = functools.partial(_after_step, args.stage, model, optimizer)
    train_ddp(ddp_model, loader, optimizer, epochs=epochs, context=context, after_step=after_step,
              max_steps=args.max_steps)
    if args.stage == "quantize":
        quantize.finish_fine_tuning(model)
    digest = check_replicas(model, context, "after training")
    _evaluate_main(model, args.val, args.model, context, f"after the {args.stage} stage")
    _save_outputs(model, args, context)
    return digest


def _save_outputs(model: nn.Module, args: argparse.Namespace, context: DistributedContext) -> None:
    from dclab.train import save_checkpoint

    if args.rank_states:
        path = save_checkpoint(model, Path(args.rank_states) / f"rank{context.rank}.pt")
        log.info("rank %d wrote its state dict to %s", context.rank, path)
    if context.is_main and args.out:
        log.info("wrote %s", save_checkpoint(model, args.out))
    if context.is_main and args.dcz:
        if args.stage != "quantize":
            log.warning("--dcz needs a quantized model; rerun with --stage quantize to write %s", args.dcz)
        else:
            from dclab.container import save_compressed

            size = save_compressed(model.cpu(), args.dcz, "huffman", preset=args.preset)
            log.info("wrote %s (%d bytes)", args.dcz, size)
    if context.distributed:
        dist.barrier()


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``python -m dclab.distributed``."""
    parser = argparse.ArgumentParser(
        prog="python -m dclab.distributed",
        description="Retrain a pruned (or quantized) network with DistributedDataParallel; launch with torchrun.",
    )

    parser.add_argument("--model", required=True, choices=MODEL_NAMES, help="network")
    parser.add_argument("--weights", required=True,
                        help="random, pretrained (torchvision's cache), trained (shipped LeNet checkpoint), or a "
                             "state dict; for --stage quantize, the pruned checkpoint of the prune stage")
    parser.add_argument("--data", required=True, help="training images in ImageFolder layout")
    parser.add_argument("--val", default=None, help="validation images in ImageFolder layout (evaluated on rank 0)")
    parser.add_argument("--stage", required=True, choices=STAGES,
                        help="prune: prune to the preset and retrain; quantize: k-means and fine-tune centroids")
    parser.add_argument("--preset", default="paper", help="per-layer settings from dclab.presets (default: paper)")
    parser.add_argument("--init", default="linear", help="k-means initialization for --stage quantize (default: linear)")

    parser.add_argument("--epochs", type=int, default=1, help="training epochs (default: 1)")
    parser.add_argument("--max-steps", type=int, default=None, help="at most this many steps per epoch")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial learning rate, cosine-annealed (default: 0.001)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default: 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size per process (default: 32)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes per rank (default: 0)")

    parser.add_argument("--out", default=None, help="rank 0 writes the stage's state dict here")
    parser.add_argument("--dcz", default=None, help="after --stage quantize, rank 0 writes the compressed file here")
    parser.add_argument("--rank-states", default=None, help="every rank writes its state dict to DIR/rank<N>.pt")

    parser.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"),
                        help="process-group backend (default: nccl on CUDA, else gloo)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="device (default: cuda:LOCAL_RANK when available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, the same on every rank (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run one stage; return the exit status."""
    args = build_parser().parse_args(argv)
    rank = os.environ.get("RANK", "0")
    # Rank 0 logs progress; the other ranks log warnings and errors only.
    level = logging.INFO if rank == "0" else logging.WARNING
    logging.basicConfig(level=level, format=f"%(levelname)s rank {rank} %(name)s: %(message)s")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise SystemExit(f"--lr {args.lr} must be a positive number")
    from dclab.data import DatasetError

    try:
        run(args)
    except (ValueError, FileNotFoundError, DatasetError) as error:
        # Expected user errors (bad names, missing files): one line per rank, no traceback.
        print(f"dclab.distributed rank {rank}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
