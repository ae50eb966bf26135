"""``verdict models package``: a user's own model and training data -> a model directory.

A bank team brings an ``nn.Module`` (a factory and its weights, or an already
exported ``torch.export`` program) and its training data (CSV or Parquet); the
packager infers and checks the input schema, exports the model with a dynamic
batch dimension, evaluates it on held-out rows, pins the explainer's background
and budget, writes the manifest with its provenance and model card, and runs the
validator before anything appears at the destination (design.md, "Bring your
own model").

The modules, one concept each: ``errors`` (the one failure family), ``spec``
(the TOML package spec), ``tabular`` (reading the data, inferring the schema,
the data errors), ``export`` (loading, checking and exporting the model),
``provenance`` (the user's source files and commit), ``destination`` (the
model directory appears whole or not at all), ``package`` (the orchestration).
Nothing is imported here, so that reading a spec or checking ``--out`` does
not load torch.
"""
