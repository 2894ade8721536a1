"""Training: ``trainer.train(cfg)`` builds a ``run.Run`` (with its one ``run.TrainOptions``) from the config
and calls ``fit.fit``: fit -> train_one_epoch -> run_step, with ``hooks`` around epochs and batches;
``steps`` (a batch's forward/backward, the epoch's tally), ``state`` (RunState), ``optim``, ``budget``,
``distributed``, ``determinism``, ``logs`` and ``rundir`` hold one concern each."""
