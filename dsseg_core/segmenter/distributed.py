"""torchrun / DDP set-up: gloo on CPU, NCCL on CUDA; a no-op context for one process."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from dsseg_core.errors import ConfigError

__all__ = ['DistContext', 'init_distributed']

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Rank/world of this process and its device; ``is_main`` on rank 0."""

    rank: int
    world_size: int
    local_rank: int
    device: Any  # torch.device
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialised:
            import torch.distributed as td

            td.barrier()

    def shutdown(self) -> None:
        if self.initialised:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()
            self.initialised = False


def init_distributed(device: str) -> DistContext:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun) and join the group."""
    import torch

    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device == 'cuda':
        if world > 1:
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f'LOCAL_RANK={local_rank} but only '
                                  f'{torch.cuda.device_count()} GPUs are visible; start '
                                  'torchrun with --nproc_per_node <= the GPU count')
            torch.cuda.set_device(local_rank)
        dev = torch.device('cuda', local_rank if world > 1 else torch.cuda.current_device())
    else:
        dev = torch.device('cpu')
    if world <= 1:
        return DistContext(0, 1, 0, dev)
    import torch.distributed as td

    backend = 'nccl' if dev.type == 'cuda' else 'gloo'
    if not td.is_initialized():
        td.init_process_group(backend=backend)
    log.info('DDP rank %d/%d on %s (%s)', rank, world, dev, backend)
    return DistContext(rank, world, local_rank, dev, initialised=True)
