import torch

from genpix.training.batches import batch_indices


def test_each_epoch_visits_every_image_once():
    n, b = 10, 4
    stream = torch.cat([batch_indices(n, b, seed=3, step=s) for s in range(5)])  # 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10))
    assert sorted(stream[10:20].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:20])  # a new order each epoch


def test_batches_are_a_pure_function_of_seed_and_step():
    assert torch.equal(batch_indices(100, 7, 1, 42), batch_indices(100, 7, 1, 42))
    assert not torch.equal(batch_indices(100, 7, 1, 42), batch_indices(100, 7, 2, 42))


def test_batch_larger_than_the_dataset_wraps_epochs():
    idx = batch_indices(3, 7, 0, 0)
    assert len(idx) == 7 and set(idx.tolist()) == {0, 1, 2}
