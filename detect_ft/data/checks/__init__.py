"""Checks of a dataset before training: the doctor (:mod:`.doctor`) and what it may find, with the
``data.on_*`` policies that say what to do about each kind of finding (:mod:`.findings`)."""
