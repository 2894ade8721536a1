"""Checkpoints: the file format (:mod:`.format`: its keys, version, the one safe writer and reader) and
the training state saved in it for an exact resume (:mod:`.training`: RNG, optimizer, scheduler, EMA)."""
