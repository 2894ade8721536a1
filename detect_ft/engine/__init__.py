"""Training: ``trainer.train(cfg)`` orchestrates; ``loop.train_one_epoch`` is the inner loop; ``optim``,
``checkpoint``, ``ema``, ``distributed`` and ``logs`` hold one concern each."""
