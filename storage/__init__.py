"""SQL storage for vlmwatch: schema, migrations, ingest and queries.

``db`` (engines, sessions, migrations, schema check), ``models`` (the schema), ``records``
(``SampleRecord``/``LabelRecord``, what collectors hand over), ``repo_samples`` / ``repo_labels`` /
``repo_status`` (queries), ``images`` (image references and validation), ``jsonl`` (the samples and
labels file formats), ``failopen`` (errors swallowed by fail-open code). Imports nothing of ours.
"""
