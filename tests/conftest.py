import pytest
import torch

from bvae_lib._memory import keep_freed_buffers

# Each test process (every xdist worker imports this file) keeps freed buffers in its heap, as
# the CLI does: encoding the metrics' batches otherwise spends as long in the kernel as in the
# network (bvae_lib/_memory.py).
keep_freed_buffers()


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests use small batches, which gain nothing from a second thread; on a 2-core machine
    shared with other jobs, two threads spin-wait for each other whenever one is preempted."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def interrupted_and_straight(tmp_path):
    """``run(model_config, objective_config, amp, batch_size)`` trains 6 steps straight into
    tmp/a, and 4 steps then a resume to 6 into tmp/b (checkpoints every 2 steps); returns the
    two TrainResults. For the bitwise-resume tests of objectives with state of their own."""
    from bvae_lib.data import DSprites
    from bvae_lib.train import TrainConfig, train

    def run(model_config, objective_config, amp, batch_size):
        def config(steps):
            return TrainConfig(steps=steps, batch_size=batch_size, log_every=2,
                               checkpoint_every=2, progress=False, device="cpu", amp=amp)
        straight = train(model_config, objective_config, DSprites(), config(6),
                         out_dir=tmp_path / "a")
        train(model_config, objective_config, DSprites(), config(4), out_dir=tmp_path / "b")
        resumed = train(model_config, objective_config, DSprites(), config(6),
                        out_dir=tmp_path / "b", resume=True)
        for k, v in straight.model.state_dict().items():
            assert torch.equal(v, resumed.model.state_dict()[k]), k
        assert straight.history == resumed.history
        return straight, resumed
    return run
