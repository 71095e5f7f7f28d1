"""Where the outside reaches identity: the HTTP API and the Kafka consumer handlers."""
