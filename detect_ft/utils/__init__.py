"""Infrastructure every layer uses: user-facing errors (:mod:`.errors`), atomic writes with the user's
umask (:mod:`.atomic_io`) and the size limits of every file kind read (:mod:`.limits`). Torch-free."""
