"""braze-trigger-consumer: Kafka domain events in, Braze API-triggered sends out."""

__version__ = "0.1.0"
