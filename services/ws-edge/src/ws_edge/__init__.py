"""Stateless STOMP 1.2 WebSocket edge fanning RabbitMQ events out to local connections."""
