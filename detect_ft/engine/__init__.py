"""Training: ``trainer.train(cfg)`` builds a ``fit.Run`` from the config and calls ``fit.fit``, the epoch loop
with ``hooks`` around it; ``loop.train_one_epoch`` is the inner loop; ``state`` (RunState), ``optim``,
``checkpoint``, ``ema``, ``distributed``, ``determinism``, ``logs`` and ``rundir`` hold one concern each."""
