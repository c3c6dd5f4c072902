"""The WhatsApp reply worker: inbound Cloud API messages answered by the orchestration runtime."""
