"""pigbench: a benchmark harness for personalized text-to-image reward models."""

__version__ = "0.1.0"
