"""utils/stop.py: a stop signal becomes a flag read at step boundaries; the second one stops at once."""
import signal

import pytest
import torch.distributed as dist

from utils.stop import DDP_POLL_STEPS, GracefulStop


def test_signal_sets_the_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert stop.requested(1) is None
        signal.raise_signal(signal.SIGTERM)  # would end the process without the handler
        assert stop.requested(1) == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_signal_stops_at_once():
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested(1) == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # Python's default SIGINT behaviour
            signal.raise_signal(signal.SIGINT)


def test_ranks_compare_flags_every_few_steps(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with GracefulStop(distributed=True) as stop:
            signal.raise_signal(signal.SIGTERM)
            assert stop.requested(DDP_POLL_STEPS + 1) is None  # not a polling step: no collective
            assert stop.requested(2 * DDP_POLL_STEPS) == signal.SIGTERM
    finally:
        dist.destroy_process_group()
