"""Drains the outbox table to RabbitMQ with publisher confirms, in per-session order."""
