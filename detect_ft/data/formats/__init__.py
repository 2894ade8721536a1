"""The annotation formats: each module reads its format into :class:`~detect_ft.data.records.DatasetRecords`
(the adapter) and writes records back (the writer). Nothing else reads raw annotation files."""
