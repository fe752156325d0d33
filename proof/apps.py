from django.apps import AppConfig


class ProofConfig(AppConfig):
    """The demo, the benchmark and the chaos run: commands only, no models."""

    name = "proof"
