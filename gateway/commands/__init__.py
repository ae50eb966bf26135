"""Command-line groups of the ``verdict`` CLI; each module owns one group."""
