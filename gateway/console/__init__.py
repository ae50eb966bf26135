"""The console: server-rendered pages for people (compliance staff, examiners, model-risk teams)."""
