"""Stop a training run on SIGINT/SIGTERM at the next step boundary, with a checkpoint of that step.

A job scheduler (SLURM's preemption, a cloud spot instance, ``bench/compare.py``) sends SIGTERM
and kills a while later; Ctrl-C sends SIGINT. Without this, a run loses every step since its last
periodic checkpoint. With it, the step in flight finishes, ``last.pth`` is written at that step
and the process exits with 128 + the signal number; ``--resume auto`` continues exactly there.
A second signal stops at once, as without the handler. Under DDP the ranks agree (a MAX
all-reduce every few steps) so that every rank saves at the same step: the save is collective.
"""
from __future__ import annotations

import signal
import sys
import threading

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DDP_POLL_STEPS = 8


class StopRequested(Exception):
    """Raised at a step boundary after a stop signal; the checkpoint of that step is written."""

    def __init__(self, step: int, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.step = step
        self.signum = signum


class GracefulStop:
    """Context manager: while active, SIGINT/SIGTERM set a flag that :meth:`requested` reports."""

    def __init__(self, device: torch.device | None = None, distributed: bool = False):
        self.signum: int | None = None
        self.device = device or torch.device("cpu")
        self.distributed = distributed
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002
        if self.signum is not None:  # the second signal: the default behaviour, now
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"{signal.Signals(signum).name}: stopping after this step with a checkpoint "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def requested(self, step: int) -> int | None:
        """The signal to stop for, or None; under DDP the same on every rank (the largest any rank got).

        Under DDP the ranks compare flags every ``DDP_POLL_STEPS`` steps only: the all-reduce
        waits for the GPU, and a stop a few steps later costs less than a sync after every step.
        """
        if not self.distributed:
            return self.signum
        if step % DDP_POLL_STEPS:
            return None
        flag = torch.tensor([self.signum or 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None
